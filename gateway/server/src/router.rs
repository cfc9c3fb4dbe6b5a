//! `Router`: the gateway's map of which shard owns which partition, learnt from the node with
//! `Metadata` requests and refreshed on `NotOwner`, `NotLeaderOrFollower`, unknown topics,
//! admin changes and a timer;
//! and the pooled links to the shards.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use spate_proto::{
    ApiKey, ErrorCode, ErrorResponse, Frame, MetadataRequest, ProtoError, Request, Response,
};
use thiserror::Error;
use tokio::sync::oneshot;

use crate::link::ShardLink;
use spate_ops::cells::DURATION_BOUNDS;
use spate_ops::Histogram;

/// Why the partition map could not be refreshed.
#[derive(Debug, Error)]
pub enum RefreshError {
    #[error("no address for the node {0}")]
    NoAddress(String),
    #[error("cannot connect to the shard at {address}: {source}")]
    Connect {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("the link to the shard at {0} broke before the answer")]
    LinkBroke(SocketAddr),
    #[error("the shard at {address} did not answer within {waited:?} (its link is reconnected)")]
    Silent {
        address: SocketAddr,
        waited: Duration,
    },
    #[error("the shard at {address} refused the metadata request: {error}")]
    Refused {
        address: SocketAddr,
        error: ErrorResponse,
    },
    #[error("the shard at {address} answered the metadata request with api key {api_key}")]
    WrongAnswer { address: SocketAddr, api_key: u16 },
    #[error(
        "the shard at {0} lists no shards (its cluster map shows no members, as while etcd \
         is out of reach): its map is not taken"
    )]
    NoShards(SocketAddr),
    #[error("the shard at {address} sent an invalid answer: {source}")]
    Invalid {
        address: SocketAddr,
        source: ProtoError,
    },
}

#[derive(Debug, Default)]
struct Routes {
    endpoints: Vec<SocketAddr>,
    topics: HashMap<String, Vec<u16>>,
}

#[derive(Debug)]
pub struct Router {
    node: String,
    /// How long a shard may take to answer, beyond the wait the request itself asks for
    /// (`--shard-answer-timeout-ms`).
    answer_timeout: Duration,
    routes: RwLock<Arc<Routes>>,
    links: Mutex<HashMap<SocketAddr, Arc<ShardLink>>>,
    refreshing: tokio::sync::Mutex<()>,
    /// This router, for background refreshes started from `&self`.
    me: Weak<Router>,
    /// Forwarding latency by shard address, kept across reconnects (metrics); at most
    /// `FORWARD_HISTOGRAMS_MAX` shards.
    forwarding: Mutex<HashMap<SocketAddr, Arc<Histogram>>>,
    /// Partition maps learnt (metrics).
    refreshes: AtomicU64,
}

/// Shards whose forwarding latency is kept: more than any cluster's shards (addresses a
/// gateway saw come and go with restarts included).
const FORWARD_HISTOGRAMS_MAX: usize = 4096;

/// A shard link as the metrics show it.
#[derive(Debug, Clone)]
pub struct LinkState {
    pub address: SocketAddr,
    pub up: bool,
    /// Forwarding latency to the shard.
    pub forward: spate_ops::HistogramSnapshot,
}

/// Where a forwarded frame's answer comes from.
#[derive(Debug)]
pub enum Pending {
    /// The answer is ready (an error made by the gateway).
    Ready(Response),
    /// The shard will answer on this receiver (link id `id`) by `deadline`, or the request
    /// is answered `Timeout`.
    Shard {
        receiver: oneshot::Receiver<Frame>,
        id: u64,
        admin: bool,
        deadline: Instant,
        link: Arc<ShardLink>,
        /// When the request was handed to the shard's link (metrics).
        sent: Instant,
    },
}

fn resolve(address: &str) -> Option<SocketAddr> {
    address.to_socket_addrs().ok()?.next()
}

/// The addresses `--node` names (comma-separated), in order, those that resolve.
fn bootstrap(nodes: &str) -> Vec<SocketAddr> {
    nodes
        .split(',')
        .map(str::trim)
        .filter(|address| !address.is_empty())
        .filter_map(resolve)
        .collect()
}

impl Router {
    pub fn new(node: String, answer_timeout: Duration) -> Arc<Self> {
        Arc::new_cyclic(|me| Router {
            node,
            answer_timeout,
            routes: RwLock::new(Arc::new(Routes::default())),
            links: Mutex::new(HashMap::new()),
            refreshing: tokio::sync::Mutex::new(()),
            me: me.clone(),
            forwarding: Mutex::new(HashMap::new()),
            refreshes: AtomicU64::new(0),
        })
    }

    /// Partition maps learnt since the start.
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    /// Whether the router has learnt a partition map (it can route).
    pub fn has_map(&self) -> bool {
        !self.routes().endpoints.is_empty()
    }

    /// Every shard link, with its forwarding latency.
    pub fn link_states(&self) -> Vec<LinkState> {
        let links: Vec<(SocketAddr, bool)> = self.links.lock().map_or_else(
            |_| Vec::new(),
            |links| {
                links
                    .iter()
                    .map(|(address, link)| (*address, !link.is_broken()))
                    .collect()
            },
        );
        let forwarding = self.forwarding.lock().ok();
        let mut states: Vec<LinkState> = links
            .into_iter()
            .map(|(address, up)| LinkState {
                address,
                up,
                forward: forwarding
                    .as_ref()
                    .and_then(|forwarding| forwarding.get(&address))
                    .map_or_else(
                        || spate_ops::HistogramSnapshot::empty(DURATION_BOUNDS),
                        |histogram| histogram.snapshot(),
                    ),
            })
            .collect();
        states.sort_by_key(|state| state.address);
        states
    }

    /// The forwarding-latency histogram of the shard at `address` (taken when a link to it
    /// opens, so requests find it on their link without a lookup).
    fn forward_histogram(&self, address: SocketAddr) -> Option<Arc<Histogram>> {
        let mut forwarding = self.forwarding.lock().ok()?;
        if let Some(histogram) = forwarding.get(&address) {
            return Some(histogram.clone());
        }
        if forwarding.len() >= FORWARD_HISTOGRAMS_MAX {
            return None;
        }
        let histogram = Arc::new(Histogram::new(DURATION_BOUNDS));
        forwarding.insert(address, histogram.clone());
        Some(histogram)
    }

    fn routes(&self) -> Arc<Routes> {
        self.routes
            .read()
            .map(|routes| routes.clone())
            .unwrap_or_default()
    }

    /// The link to a shard, connecting (or reconnecting a broken one) when needed.
    async fn link(&self, address: SocketAddr) -> std::io::Result<Arc<ShardLink>> {
        if let Ok(links) = self.links.lock() {
            if let Some(link) = links.get(&address).filter(|link| !link.is_broken()) {
                return Ok(link.clone());
            }
        }
        let link = Arc::new(
            ShardLink::connect(address)
                .await?
                .with_forward_latency(self.forward_histogram(address)),
        );
        if let Ok(mut links) = self.links.lock() {
            links.insert(address, link.clone());
        }
        Ok(link)
    }

    /// Asks the node for the partition map (any shard answers) and replaces the cache. The
    /// error is the last candidate's.
    pub async fn refresh(&self) -> Result<(), RefreshError> {
        let _one_at_a_time = self.refreshing.lock().await;
        // The addresses it was given first (the nodes it fronts), then every shard of the
        // last map: a gateway whose own node is gone still learns the map from another.
        let mut candidates = bootstrap(&self.node);
        for known in self.routes().endpoints.iter() {
            if !candidates.contains(known) {
                candidates.push(*known);
            }
        }
        let request = Request::Metadata(MetadataRequest {
            placement: false,
            racks: false,
            topics: vec![],
            settings: false,
        })
        .to_frame(0);
        let mut last_error = RefreshError::NoAddress(self.node.clone());
        for address in candidates {
            let link = match self.link(address).await {
                Ok(link) => link,
                Err(source) => {
                    last_error = RefreshError::Connect { address, source };
                    continue;
                }
            };
            let Some((id, receiver)) = link.send(&request).await else {
                last_error = RefreshError::LinkBroke(address);
                continue;
            };
            let frame = match tokio::time::timeout(self.answer_timeout, receiver).await {
                Ok(Ok(frame)) => frame,
                Ok(Err(_)) => {
                    last_error = RefreshError::LinkBroke(address);
                    continue;
                }
                Err(_) => {
                    self.give_up(&link, id);
                    last_error = RefreshError::Silent {
                        address,
                        waited: self.answer_timeout,
                    };
                    continue;
                }
            };
            match Response::decode(&frame) {
                // A map without shards would leave the gateway nowhere to send anything, nor
                // anyone to ask again but the addresses it started with.
                Ok(Response::Metadata(metadata)) if metadata.shards.is_empty() => {
                    last_error = RefreshError::NoShards(address);
                }
                Ok(Response::Metadata(metadata)) => {
                    let endpoints = metadata
                        .shards
                        .iter()
                        .filter_map(|shard| resolve(&shard.endpoint))
                        .collect();
                    let topics = metadata
                        .topics
                        .into_iter()
                        .map(|topic| {
                            (
                                topic.name,
                                topic.partitions.iter().map(|p| p.shard.0).collect(),
                            )
                        })
                        .collect();
                    if let Ok(mut routes) = self.routes.write() {
                        *routes = Arc::new(Routes { endpoints, topics });
                    }
                    self.refreshes.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Ok(Response::Error { error, .. }) => {
                    last_error = RefreshError::Refused { address, error }
                }
                Ok(other) => {
                    last_error = RefreshError::WrongAnswer {
                        address,
                        api_key: other.api_key(),
                    }
                }
                Err(source) => last_error = RefreshError::Invalid { address, source },
            }
        }
        Err(last_error)
    }

    /// Where a frame goes: the owning shard of its partition, or any shard.
    async fn target(&self, frame: &Frame) -> Result<Option<SocketAddr>, Response> {
        let api_key = frame.head.api_key;
        let route = frame.route().map_err(|error| {
            Response::error(api_key, ErrorCode::from(&error), error.to_string())
        })?;
        let Some(route) = route else {
            let routes = self.routes();
            return Ok(routes
                .endpoints
                .first()
                .copied()
                .or_else(|| bootstrap(&self.node).first().copied()));
        };
        for attempt in 0..2 {
            let routes = self.routes();
            if let Some(shards) = routes.topics.get(route.topic) {
                let owner = shards
                    .get(route.partition.0 as usize)
                    .and_then(|shard| routes.endpoints.get(usize::from(*shard)));
                // An unknown partition goes to any shard, which answers with the error.
                return Ok(owner.or(routes.endpoints.first()).copied());
            }
            if attempt == 0 && self.refresh().await.is_err() {
                break;
            }
        }
        // Unknown topic after a refresh: any shard answers UnknownTopic.
        Ok(self
            .routes()
            .endpoints
            .first()
            .copied()
            .or_else(|| bootstrap(&self.node).first().copied()))
    }

    /// Sends a client's frame towards its shard, in the caller's order. A frame that cannot
    /// be handed to the shard's connection is answered `Unavailable` (not delivered); one
    /// whose connection breaks before the answer, `OutcomeUnknown`.
    pub async fn send(&self, frame: &Frame) -> Pending {
        let api_key = frame.head.api_key;
        if let Some(api) = ApiKey::from_u16(api_key).filter(|api| api.is_node_link_only()) {
            // Replication between nodes: a client has no business sending it.
            return Pending::Ready(Response::error(
                api_key,
                ErrorCode::InvalidRequest,
                format!(
                    "{} is spoken between nodes only; the gateway does not forward it",
                    api.name()
                ),
            ));
        }
        let unavailable = |message: String| {
            Pending::Ready(Response::error(api_key, ErrorCode::Unavailable, message))
        };
        let target = match self.target(frame).await {
            Ok(Some(target)) => target,
            Ok(None) => {
                self.refresh_soon();
                return unavailable(format!("the node at {} is not reachable", self.node));
            }
            Err(response) => return Pending::Ready(response),
        };
        let link = match self.link(target).await {
            Ok(link) => link,
            Err(error) => {
                // The node may have restarted elsewhere; learn its shards again.
                self.refresh_soon();
                return unavailable(format!("the shard at {target} is not reachable: {error}"));
            }
        };
        // The request's own wait (a fetch's, a group's) is the shard's to take, plus the
        // answer timeout.
        let sent = Instant::now();
        let deadline = sent + self.answer_timeout + spate_proto::parked_wait(frame);
        match link.send(frame.bytes()).await {
            Some((id, receiver)) => Pending::Shard {
                receiver,
                id,
                // Topic changes (create, delete, automatic creation) change the map.
                admin: matches!(api_key, 1 | 2 | 8),
                deadline,
                link,
                sent,
            },
            None => unavailable(format!("the connection to the shard at {target} broke")),
        }
    }

    /// Waits for the shard's answer and gives it the client's correlation id; refreshes the
    /// partition map when the answer says it is stale.
    /// The answer is a header and a body, so a large fetch response is not copied.
    pub async fn answer(
        &self,
        pending: Pending,
        api_key: u16,
        correlation_id: u64,
    ) -> (Bytes, Bytes) {
        let header_size = spate_proto::limits::FRAME_HEADER_SIZE as usize;
        let split = |bytes: Bytes| (bytes.slice(..header_size), bytes.slice(header_size..));
        match pending {
            Pending::Ready(response) => split(response.to_frame(correlation_id)),
            Pending::Shard {
                receiver,
                id,
                admin,
                deadline,
                link,
                sent,
            } => match self.within_deadline(receiver, id, deadline, &link).await {
                Ok(frame) => {
                    link.answered_after(sent);
                    let stale = admin
                        || (frame.head.is_error()
                            && matches!(
                                Response::decode(&frame),
                                Ok(Response::Error { error, .. }) if map_is_stale(error.code)
                            ));
                    if stale {
                        self.refresh_soon();
                    }
                    let mut header = bytes::BytesMut::from(&frame.bytes()[..header_size]);
                    spate_proto::frame::FrameHeader::set_correlation_id(
                        &mut header,
                        correlation_id,
                    );
                    (header.freeze(), frame.body())
                }
                Err(error) => split(
                    Response::Error {
                        api_key,
                        error: *error,
                    }
                    .to_frame(correlation_id),
                ),
            },
        }
    }

    /// A request on `link` (link id `id`) passed its deadline: a link that brought no answer
    /// for the answer timeout is given up (the shard stopped answering without closing it:
    /// every caller on it fails, the next request connects anew); on a link that answers
    /// others, only this caller is dropped (a slow request does not fail the rest).
    fn give_up(&self, link: &ShardLink, id: u64) {
        if link.silent_for() >= self.answer_timeout {
            link.abandon();
            tracing::warn!(
                node = %self.node,
                timeout_ms = self.answer_timeout.as_millis(),
                "a shard stopped answering; its link is reconnected"
            );
        } else {
            link.forget(id);
        }
    }

    /// The shard's answer on `receiver`, or the error its absence gets: `OutcomeUnknown` when
    /// the link broke, `Timeout` when `deadline` passed (`give_up`). Either refreshes the map.
    async fn within_deadline(
        &self,
        receiver: oneshot::Receiver<Frame>,
        id: u64,
        deadline: Instant,
        link: &ShardLink,
    ) -> Result<Frame, Box<ErrorResponse>> {
        let error = match tokio::time::timeout_at(deadline.into(), receiver).await {
            Ok(Ok(frame)) => return Ok(frame),
            Ok(Err(_)) => ErrorResponse::new(ErrorCode::OutcomeUnknown, OUTCOME_UNKNOWN),
            Err(_) => {
                self.give_up(link, id);
                ErrorResponse::new(
                    ErrorCode::Timeout,
                    format!(
                        "the shard did not answer within {} ms (beyond the request's own \
                         wait): the request may or may not have been carried out",
                        self.answer_timeout.as_millis()
                    ),
                )
            }
        };
        self.refresh_soon();
        Err(Box::new(error))
    }

    /// Waits for the shard's answer and decodes it (for requests the gateway made itself,
    /// such as the Kafka listener's); refreshes the partition map when the answer says it is
    /// stale, as [`Router::answer`] does.
    pub async fn response(&self, pending: Pending) -> Response {
        let (receiver, id, admin, deadline, link, sent) = match pending {
            Pending::Ready(response) => return response,
            Pending::Shard {
                receiver,
                id,
                admin,
                deadline,
                link,
                sent,
            } => (receiver, id, admin, deadline, link, sent),
        };
        let frame = match self.within_deadline(receiver, id, deadline, &link).await {
            Ok(frame) => {
                link.answered_after(sent);
                frame
            }
            Err(error) => {
                return Response::Error {
                    api_key: 0,
                    error: *error,
                }
            }
        };
        let response = Response::decode(&frame).unwrap_or_else(|error| {
            Response::error(
                frame.head.api_key,
                ErrorCode::Internal,
                format!("the shard's answer does not decode: {error}"),
            )
        });
        let stale =
            admin || matches!(&response, Response::Error { error, .. } if map_is_stale(error.code));
        if stale {
            self.refresh_soon();
        }
        response
    }

    /// Refreshes the partition map in the background, unless a refresh is running already.
    fn refresh_soon(&self) {
        if self.refreshing.try_lock().is_err() {
            return;
        }
        let Some(router) = self.me.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            let _ = router.refresh().await;
        });
    }
}

/// Whether an answer with `code` says the partition map is stale: the partition is on
/// another shard, the topic is unknown (created or deleted since), or the node no longer
/// leads it (in a cluster, leadership moved to another node).
fn map_is_stale(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::NotOwner | ErrorCode::UnknownTopic | ErrorCode::NotLeaderOrFollower
    )
}

/// The message of an `OutcomeUnknown` answer.
const OUTCOME_UNKNOWN: &str =
    "the connection to the shard broke after the request was sent: it may or may not have been carried out";
