//! `spate-gateway`: the stateless QUIC front. It terminates QUIC and TLS 1.3 (ALPN
//! `spate/1`), learns the partition → shard map from the node, and forwards every frame to
//! the owning shard over pooled, pipelined TCP links, rewriting only the frame header's
//! correlation id. Record batches are never decoded here.

pub mod budget;
pub mod config;
pub mod link;
pub mod router;
pub mod server;
pub mod tls;

pub use config::{Flags, GatewayConfig};
pub use server::{start, Gateway, GatewayError};
