//! The gateway's metrics (docs/operations.md, "Metrics"): connections, streams, requests by
//! protocol, kind and outcome, bytes in and out, and, through the router, each shard link's
//! state and forwarding latency. The gateway's tasks run on any tokio worker, so its cells
//! are counted with the `_shared` (atomic) methods; every cell is a fixed slot, found by
//! index, never by a lock or a map lookup on the request path.

use std::fmt;
use std::sync::Arc;

use prometheus_client::encoding::DescriptorEncoder;
use spate_ops::{counter, gauge, histogram, Count, Exposition, Labels, Level, Readiness};
use spate_proto::{ApiKey, ErrorCode};

use crate::router::Router;

/// Spate request kinds counted: raw api keys 0 (unknown) to 17.
const QUIC_API_SLOTS: usize = 18;
/// Outcomes of a Spate request: 0 is success, 1..=127 an error code (larger: 127, `other`).
const QUIC_CODE_SLOTS: usize = 128;
/// Kafka api keys counted: 0 to 74 (a larger one counts as 74's slot, `unknown`).
const KAFKA_API_SLOTS: usize = 75;
/// Kafka error codes counted per api: -1 to 126, stored at code + 1 (a larger one in the
/// last slot, `other`).
const KAFKA_CODE_SLOTS: usize = 128;

/// A front end of the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Quic,
    Kafka,
}

impl Protocol {
    fn index(self) -> usize {
        match self {
            Protocol::Quic => 0,
            Protocol::Kafka => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Protocol::Quic => "quic",
            Protocol::Kafka => "kafka",
        }
    }

    const ALL: [Protocol; 2] = [Protocol::Quic, Protocol::Kafka];
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The listener's connection limit was reached.
    ConnectionLimit,
    /// The QUIC or TLS handshake failed.
    Handshake,
}

impl Refusal {
    const ALL: [Refusal; 2] = [Refusal::ConnectionLimit, Refusal::Handshake];

    fn index(self) -> usize {
        match self {
            Refusal::ConnectionLimit => 0,
            Refusal::Handshake => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Refusal::ConnectionLimit => "connection_limit",
            Refusal::Handshake => "handshake_failed",
        }
    }
}

/// Everything the gateway counts.
#[derive(Debug)]
pub struct GatewayMetrics {
    connections: [Level; 2],
    accepted: [Count; 2],
    refused: [[Count; 2]; 2],
    received: [Count; 2],
    sent: [Count; 2],
    /// Open QUIC streams.
    pub streams: Level,
    /// `QUIC_API_SLOTS` × `QUIC_CODE_SLOTS`.
    quic_requests: Box<[Count]>,
    /// Kafka requests answered (index 0) or ended by closing the connection (index 1), by
    /// api key.
    kafka_requests: Box<[[Count; 2]]>,
    /// `KAFKA_API_SLOTS` × `KAFKA_CODE_SLOTS`: partition errors in Kafka answers.
    kafka_partition_errors: Box<[Count]>,
    /// Set once the gateway's listeners are up; `/readyz` also needs the partition map.
    pub listening: std::sync::atomic::AtomicBool,
    router: std::sync::OnceLock<Arc<Router>>,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        GatewayMetrics {
            connections: Default::default(),
            accepted: Default::default(),
            refused: Default::default(),
            received: Default::default(),
            sent: Default::default(),
            streams: Level::default(),
            quic_requests: (0..QUIC_API_SLOTS * QUIC_CODE_SLOTS)
                .map(|_| Count::default())
                .collect(),
            kafka_requests: (0..KAFKA_API_SLOTS).map(|_| Default::default()).collect(),
            kafka_partition_errors: (0..KAFKA_API_SLOTS * KAFKA_CODE_SLOTS)
                .map(|_| Count::default())
                .collect(),
            listening: std::sync::atomic::AtomicBool::new(false),
            router: std::sync::OnceLock::new(),
        }
    }
}

/// A connection counted open until dropped.
#[derive(Debug)]
pub struct OpenConnection {
    metrics: Arc<GatewayMetrics>,
    protocol: Protocol,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics.connections[self.protocol.index()].add_shared(-1);
    }
}

/// A QUIC stream counted open until dropped.
#[derive(Debug)]
pub struct OpenStream(Arc<GatewayMetrics>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.streams.add_shared(-1);
    }
}

/// Counting of requests and bytes paused, metrics on or not: what the benchmark switches to
/// measure what counting costs (`spate-bench metrics-cost`); never set by a gateway.
static PAUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Pauses (`true`) or resumes the counting of requests, bytes and forwarding latency in this
/// process (connections and streams are still counted: they are not per request).
pub fn pause(paused: bool) {
    PAUSED.store(paused, std::sync::atomic::Ordering::Relaxed);
}

/// Whether counting is paused ([`pause`]).
pub fn paused() -> bool {
    PAUSED.load(std::sync::atomic::Ordering::Relaxed)
}

impl GatewayMetrics {
    pub fn new() -> Arc<Self> {
        Arc::new(GatewayMetrics::default())
    }

    /// The router whose links and map the scrape reports (set once, at start).
    pub fn attach(&self, router: Arc<Router>) {
        let _ = self.router.set(router);
    }

    /// Counts an accepted connection, open until the returned guard drops.
    pub fn connection(self: &Arc<Self>, protocol: Protocol) -> OpenConnection {
        self.accepted[protocol.index()].add_shared(1);
        self.connections[protocol.index()].add_shared(1);
        OpenConnection {
            metrics: self.clone(),
            protocol,
        }
    }

    pub fn refused(&self, protocol: Protocol, why: Refusal) {
        if paused() {
            return;
        }
        self.refused[protocol.index()][why.index()].add_shared(1);
    }

    /// Counts a QUIC stream, open until the returned guard drops.
    pub fn stream(self: &Arc<Self>) -> OpenStream {
        self.streams.add_shared(1);
        OpenStream(self.clone())
    }

    pub fn received(&self, protocol: Protocol, bytes: usize) {
        if paused() {
            return;
        }
        self.received[protocol.index()].add_shared(bytes as u64);
    }

    pub fn sent(&self, protocol: Protocol, bytes: usize) {
        if paused() {
            return;
        }
        self.sent[protocol.index()].add_shared(bytes as u64);
    }

    /// Counts a Spate request answered with `error` (`None`: success).
    pub fn quic_request(&self, api_key: u16, error: Option<ErrorCode>) {
        if paused() {
            return;
        }
        let api = usize::from(api_key).min(QUIC_API_SLOTS - 1);
        let code = error.map_or(0, |code| {
            usize::from(code.to_u16()).clamp(1, QUIC_CODE_SLOTS - 1)
        });
        self.quic_requests[api * QUIC_CODE_SLOTS + code].add_shared(1);
    }

    fn kafka_api(api_key: i16) -> usize {
        usize::try_from(api_key)
            .unwrap_or(KAFKA_API_SLOTS - 1)
            .min(KAFKA_API_SLOTS - 1)
    }

    /// Counts a Kafka request: answered, or ended by closing the connection.
    pub fn kafka_request(&self, api_key: i16, closed: bool) {
        if paused() {
            return;
        }
        self.kafka_requests[Self::kafka_api(api_key)][usize::from(closed)].add_shared(1);
    }

    /// Counts a partition's error code in a Kafka answer (0 is not counted).
    pub fn kafka_partition_error(&self, api_key: i16, code: i16) {
        if paused() {
            return;
        }
        if code == 0 {
            return;
        }
        let slot = usize::try_from(i32::from(code) + 1)
            .unwrap_or(KAFKA_CODE_SLOTS - 1)
            .min(KAFKA_CODE_SLOTS - 1);
        self.kafka_partition_errors[Self::kafka_api(api_key) * KAFKA_CODE_SLOTS + slot]
            .add_shared(1);
    }
}

fn protocol_label(protocol: Protocol) -> Labels {
    vec![("protocol", protocol.name().to_owned())]
}

fn quic_api_name(api: usize) -> String {
    ApiKey::label_of(u16::try_from(api).unwrap_or(u16::MAX)).to_owned()
}

fn kafka_api_name(api: usize) -> String {
    if api == KAFKA_API_SLOTS - 1 {
        return "unknown".to_owned();
    }
    i16::try_from(api)
        .ok()
        .and_then(|key| kafka_protocol::messages::ApiKey::try_from(key).ok())
        .map_or_else(|| format!("api_{api}"), |key| format!("{key:?}"))
}

fn quic_error_name(code: usize) -> String {
    if code == QUIC_CODE_SLOTS - 1 {
        return "other".to_owned();
    }
    ErrorCode::from_u16(u16::try_from(code).unwrap_or(u16::MAX)).label()
}

fn kafka_error_name(slot: usize) -> String {
    if slot == KAFKA_CODE_SLOTS - 1 {
        return "other".to_owned();
    }
    let code = i16::try_from(slot).map_or(i16::MAX, |slot| slot - 1);
    match kafka_protocol::error::ResponseError::try_from_code(code) {
        Some(error) => format!("{error:?}"),
        None => format!("code_{code}"),
    }
}

#[allow(clippy::cast_precision_loss)]
fn float(value: i64) -> f64 {
    value as f64
}

impl Exposition for GatewayMetrics {
    fn encode(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        spate_ops::expose::build_info(encoder, "gateway")?;
        let per_protocol = |cells: &[Level; 2]| -> Vec<(Labels, f64)> {
            Protocol::ALL
                .iter()
                .map(|&protocol| {
                    (
                        protocol_label(protocol),
                        float(cells[protocol.index()].get()),
                    )
                })
                .collect()
        };
        let counted = |cells: &[Count; 2]| -> Vec<(Labels, u64)> {
            Protocol::ALL
                .iter()
                .map(|&protocol| (protocol_label(protocol), cells[protocol.index()].get()))
                .collect()
        };
        gauge(
            encoder,
            "spate_gateway_connections",
            "Open client connections.",
            &per_protocol(&self.connections),
        )?;
        counter(
            encoder,
            "spate_gateway_connections_accepted_total",
            "Client connections accepted.",
            &counted(&self.accepted),
        )?;
        let mut refused = Vec::new();
        for protocol in Protocol::ALL {
            for why in Refusal::ALL {
                let mut labels = protocol_label(protocol);
                labels.push(("reason", why.name().to_owned()));
                refused.push((labels, self.refused[protocol.index()][why.index()].get()));
            }
        }
        counter(
            encoder,
            "spate_gateway_connections_refused_total",
            "Client connections refused, by reason.",
            &refused,
        )?;
        gauge(
            encoder,
            "spate_gateway_streams",
            "Open QUIC streams.",
            &[(Vec::new(), float(self.streams.get()))],
        )?;
        counter(
            encoder,
            "spate_gateway_received_bytes_total",
            "Request bytes received from clients.",
            &counted(&self.received),
        )?;
        counter(
            encoder,
            "spate_gateway_sent_bytes_total",
            "Answer bytes sent to clients.",
            &counted(&self.sent),
        )?;
        let mut requests = Vec::new();
        for api in 0..QUIC_API_SLOTS {
            for code in 0..QUIC_CODE_SLOTS {
                let count = self.quic_requests[api * QUIC_CODE_SLOTS + code].get();
                if count > 0 {
                    let outcome = if code == 0 {
                        "ok".to_owned()
                    } else {
                        quic_error_name(code)
                    };
                    requests.push((
                        vec![
                            ("protocol", "quic".to_owned()),
                            ("api", quic_api_name(api)),
                            ("outcome", outcome),
                        ],
                        count,
                    ));
                }
            }
        }
        for (api, cells) in self.kafka_requests.iter().enumerate() {
            for (closed, cell) in cells.iter().enumerate() {
                let count = cell.get();
                if count > 0 {
                    let outcome = if closed == 1 { "closed" } else { "ok" };
                    requests.push((
                        vec![
                            ("protocol", "kafka".to_owned()),
                            ("api", kafka_api_name(api)),
                            ("outcome", outcome.to_owned()),
                        ],
                        count,
                    ));
                }
            }
        }
        counter(
            encoder,
            "spate_gateway_requests_total",
            "Client requests answered, by protocol, api and outcome (QUIC: ok or the error; Kafka: ok, or closed when the request ended its connection).",
            &requests,
        )?;
        let mut partition_errors = Vec::new();
        for api in 0..KAFKA_API_SLOTS {
            for slot in 0..KAFKA_CODE_SLOTS {
                let count = self.kafka_partition_errors[api * KAFKA_CODE_SLOTS + slot].get();
                if count > 0 {
                    partition_errors.push((
                        vec![
                            ("api", kafka_api_name(api)),
                            ("error", kafka_error_name(slot)),
                        ],
                        count,
                    ));
                }
            }
        }
        counter(
            encoder,
            "spate_gateway_kafka_partition_errors_total",
            "Partition errors in Kafka Produce and Fetch answers, by api and Kafka error.",
            &partition_errors,
        )?;
        let links = self
            .router
            .get()
            .map(|router| router.link_states())
            .unwrap_or_default();
        let up: Vec<(Labels, f64)> = links
            .iter()
            .map(|link| {
                (
                    vec![("shard", link.address.to_string())],
                    if link.up { 1.0 } else { 0.0 },
                )
            })
            .collect();
        gauge(
            encoder,
            "spate_gateway_link_up",
            "1 while the gateway's link to a node shard is connected.",
            &up,
        )?;
        let latency: Vec<_> = links
            .iter()
            .map(|link| {
                (
                    vec![("shard", link.address.to_string())],
                    link.forward.clone(),
                )
            })
            .collect();
        histogram(
            encoder,
            "spate_gateway_forward_duration_seconds",
            "From sending a request to a node shard to its answer (long polls included).",
            &latency,
        )?;
        let refreshes = self.router.get().map_or(0, |router| router.refreshes());
        counter(
            encoder,
            "spate_gateway_partition_map_refreshes_total",
            "Partition maps learnt from the node.",
            &[(Vec::new(), refreshes)],
        )
    }

    fn readiness(&self) -> Readiness {
        let listening = self.listening.load(std::sync::atomic::Ordering::Relaxed);
        let mapped = self.router.get().is_some_and(|router| router.has_map());
        let mut detail = String::new();
        if !listening {
            detail.push_str("starting: the listeners are not up yet\n");
        }
        if !mapped {
            detail.push_str("no partition map from the node yet (is the node up?)\n");
        }
        Readiness {
            ready: listening && mapped,
            detail,
        }
    }
}
