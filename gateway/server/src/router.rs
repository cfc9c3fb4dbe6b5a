//! `Router`: the gateway's map of which shard owns which partition, learnt from the node with
//! `Metadata` requests and refreshed on `NotOwner`, unknown topics, admin changes and a timer;
//! and the pooled links to the shards.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex, RwLock, Weak};

use bytes::Bytes;
use spate_proto::{ErrorCode, Frame, MetadataRequest, Request, Response};
use tokio::sync::oneshot;

use crate::link::ShardLink;

#[derive(Debug, Default)]
struct Routes {
    endpoints: Vec<SocketAddr>,
    topics: HashMap<String, Vec<u16>>,
}

#[derive(Debug)]
pub struct Router {
    node: String,
    routes: RwLock<Arc<Routes>>,
    links: Mutex<HashMap<SocketAddr, Arc<ShardLink>>>,
    refreshing: tokio::sync::Mutex<()>,
    /// This router, for background refreshes started from `&self`.
    me: Weak<Router>,
}

/// Where a forwarded frame's answer comes from.
#[derive(Debug)]
pub enum Pending {
    /// The answer is ready (an error made by the gateway).
    Ready(Response),
    /// The shard will answer on this receiver.
    Shard {
        receiver: oneshot::Receiver<Frame>,
        admin: bool,
    },
}

fn resolve(address: &str) -> Option<SocketAddr> {
    address.to_socket_addrs().ok()?.next()
}

impl Router {
    pub fn new(node: String) -> Arc<Self> {
        Arc::new_cyclic(|me| Router {
            node,
            routes: RwLock::new(Arc::new(Routes::default())),
            links: Mutex::new(HashMap::new()),
            refreshing: tokio::sync::Mutex::new(()),
            me: me.clone(),
        })
    }

    fn routes(&self) -> Arc<Routes> {
        self.routes
            .read()
            .map(|routes| routes.clone())
            .unwrap_or_default()
    }

    /// The link to a shard, connecting (or reconnecting a broken one) when needed.
    async fn link(&self, address: SocketAddr) -> Option<Arc<ShardLink>> {
        if let Ok(links) = self.links.lock() {
            if let Some(link) = links.get(&address).filter(|link| !link.is_broken()) {
                return Some(link.clone());
            }
        }
        let link = Arc::new(ShardLink::connect(address).await.ok()?);
        if let Ok(mut links) = self.links.lock() {
            links.insert(address, link.clone());
        }
        Some(link)
    }

    /// Asks the node for the partition map (any shard answers) and replaces the cache.
    pub async fn refresh(&self) -> Result<(), String> {
        let _one_at_a_time = self.refreshing.lock().await;
        let mut candidates: Vec<SocketAddr> = self.routes().endpoints.clone();
        if let Some(node) = resolve(&self.node) {
            candidates.insert(0, node);
        }
        let request = Request::Metadata(MetadataRequest { topics: vec![] }).to_frame(0);
        let mut last_error = format!("no address for the node {}", self.node);
        for address in candidates {
            let Some(link) = self.link(address).await else {
                last_error = format!("cannot connect to {address}");
                continue;
            };
            let Some(receiver) = link.send(&request).await else {
                continue;
            };
            let Ok(frame) = receiver.await else { continue };
            match Response::decode(&frame) {
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
                    return Ok(());
                }
                Ok(other) => last_error = format!("unexpected metadata answer {other:?}"),
                Err(error) => last_error = error.to_string(),
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
                .or_else(|| resolve(&self.node)));
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
            .or_else(|| resolve(&self.node)))
    }

    /// Sends a client's frame towards its shard, in the caller's order.
    pub async fn send(&self, frame: &Frame) -> Pending {
        let api_key = frame.head.api_key;
        let unavailable = |message: String| {
            Pending::Ready(Response::error(api_key, ErrorCode::Unavailable, message))
        };
        let target = match self.target(frame).await {
            Ok(Some(target)) => target,
            Ok(None) => return unavailable(format!("the node at {} is not reachable", self.node)),
            Err(response) => return Pending::Ready(response),
        };
        let Some(link) = self.link(target).await else {
            // The node may have restarted elsewhere; learn its shards again.
            self.refresh_soon();
            return unavailable(format!("the shard at {target} is not reachable"));
        };
        match link.send(frame.bytes()).await {
            Some(receiver) => Pending::Shard {
                receiver,
                // Topic changes (create, delete, automatic creation) change the map.
                admin: matches!(api_key, 1 | 2 | 8),
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
            Pending::Shard { receiver, admin } => match receiver.await {
                Ok(frame) => {
                    let stale = admin
                        || (frame.head.is_error()
                            && matches!(
                                Response::decode(&frame),
                                Ok(Response::Error { error, .. })
                                    if matches!(error.code, ErrorCode::NotOwner | ErrorCode::UnknownTopic)
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
                Err(_) => {
                    self.refresh_soon();
                    split(
                        Response::error(
                            api_key,
                            ErrorCode::Unavailable,
                            "the connection to the shard broke",
                        )
                        .to_frame(correlation_id),
                    )
                }
            },
        }
    }

    /// Waits for the shard's answer and decodes it (for requests the gateway made itself,
    /// such as the Kafka listener's); refreshes the partition map when the answer says it is
    /// stale, as [`Router::answer`] does.
    pub async fn response(&self, pending: Pending) -> Response {
        let (receiver, admin) = match pending {
            Pending::Ready(response) => return response,
            Pending::Shard { receiver, admin } => (receiver, admin),
        };
        let Ok(frame) = receiver.await else {
            self.refresh_soon();
            return Response::error(
                0,
                ErrorCode::Unavailable,
                "the connection to the shard broke",
            );
        };
        let response = Response::decode(&frame).unwrap_or_else(|error| {
            Response::error(
                frame.head.api_key,
                ErrorCode::Internal,
                format!("the shard's answer does not decode: {error}"),
            )
        });
        let stale = admin
            || matches!(&response, Response::Error { error, .. }
                if matches!(error.code, ErrorCode::NotOwner | ErrorCode::UnknownTopic));
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
