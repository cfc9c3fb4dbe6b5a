//! Named limits of the Kafka listener, each with its reason.

/// Largest request accepted by default (Kafka's `socket.request.max.bytes`): checked against
/// the 4-byte size prefix before anything is allocated. Flag `--kafka-request-bytes-max`.
pub const REQUEST_SIZE_MAX_DEFAULT: u32 = 100 << 20;

/// Smallest request: a request header v0 (api key, version, correlation id) is 8 bytes.
pub const REQUEST_SIZE_MIN: u32 = 8;
