//! `spate-kafka`: the Kafka wire protocol, translated to Spate. Pure: no I/O, no clock, no
//! runtime (the gateway's `kafka` module is the shell that moves the bytes).
//!
//! Schemas and flexible versions come from the `kafka-protocol` crate (patched, see
//! `gateway/vendor/kafka-protocol/SPATE-PATCH.md`); this crate decides which APIs and
//! versions Spate serves, frames requests with bounded reads, maps errors to Kafka error
//! codes and converts record batches between Kafka's v2 format and Spate's without
//! re-encoding records. Specified in `docs/kafka.md`.

pub mod admin;
pub mod batch;
pub mod errors;
pub mod frame;
pub mod groups;
pub mod limits;
pub mod moves;
pub mod splice;
pub mod translate;
pub mod versions;
