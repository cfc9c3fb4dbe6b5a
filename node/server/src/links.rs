//! A follower shard's links to its leaders' shards (docs/cluster.md, "Roles"): one TCP
//! connection per leader shard, shared by every replica this shard follows there (a node
//! following thousands of partitions holds a handful of connections, not one per replica).
//! Each replica's fetcher sends its frames through the link's writer task, whole and in
//! order, and gets the answer to its fetch by correlation id from the link's reader task; a
//! progress report's empty answer is dropped. A link that fails (the connection broke, a
//! frame did not decode, or it went silent while a fetch waited) closes for all its
//! fetchers, which connect again through [`Links::get`] in a new fetch session each; a link
//! that keeps delivering answers is not closed because one fetch's answer is slow to come
//! behind the others.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalSender};
use glommio::net::TcpStream;
use glommio::sync::Semaphore;
use spate_proto::limits::RESPONSE_SIZE_MAX;
use spate_proto::{FrameDecoder, Request, Response};

/// Frames waiting for a link's writer (fetches and progress reports of all the replicas
/// followed over it); a fetcher waits for room past this.
pub const LINK_FRAMES_MAX: usize = 1024;

/// How long a connection to a leader's shard may take.
const CONNECT_WAIT: Duration = Duration::from_secs(2);

/// After a failed connection, fetchers asking for the same link within this are told at once
/// (thousands of fetchers do not each wait out a connection to a node that is down).
const CONNECT_RETRY: Duration = Duration::from_millis(200);

/// A follower shard's links, one per leader shard address, and its fetch sessions' numbers.
/// Links no fetcher uses are closed and forgotten whenever a link to a new address is made,
/// so a shard holds the links its fetchers use, plus at most the ones made since.
#[derive(Default)]
pub struct Links {
    slots: RefCell<HashMap<SocketAddr, Rc<Slot>>>,
}

/// The last fetch session number this process handed out, on any shard: a replica that
/// moves to another shard of its node starts a session numbered after its old shard's.
static SESSIONS: AtomicU64 = AtomicU64::new(0);

/// A follower's fetch session, as the leader orders it: by the follower's incarnation (the
/// etcd revision of its newest registration, which grows across restarts), then by its
/// number (which grows within the process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub incarnation: u64,
    pub number: u64,
}

/// One leader shard's link, made by one fetcher at a time.
struct Slot {
    turn: Semaphore,
    link: RefCell<Option<Rc<Link>>>,
    failed: Cell<Option<Instant>>,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("links", &self.slots.borrow().len())
            .finish()
    }
}

impl Links {
    /// A new fetch session of a follower in `incarnation`: numbered after every earlier one
    /// of this process, whatever its shard.
    pub fn new_session(&self, incarnation: u64) -> Session {
        Session {
            incarnation,
            number: SESSIONS.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }

    /// How many leader shard addresses this shard has a link (or a link's slot) to.
    pub fn count(&self) -> usize {
        self.slots.borrow().len()
    }

    /// Closes and forgets the links no fetcher uses: none holds the link or waits for its
    /// turn (a leader that moved away, a node that restarted on other ports).
    fn sweep(&self) {
        self.slots.borrow_mut().retain(|_, slot| {
            let waited_for = Rc::strong_count(slot) > 1;
            let held = slot
                .link
                .borrow()
                .as_ref()
                .is_some_and(|link| !link.is_closed() && Rc::strong_count(link) > 1);
            if waited_for || held {
                return true;
            }
            if let Some(link) = slot.link.borrow_mut().take() {
                link.close();
            }
            false
        });
    }

    /// The open link to `address`, connected now if there is none.
    pub async fn get(&self, address: SocketAddr) -> Result<Rc<Link>, String> {
        if !self.slots.borrow().contains_key(&address) {
            self.sweep();
        }
        let slot = self
            .slots
            .borrow_mut()
            .entry(address)
            .or_insert_with(|| {
                Rc::new(Slot {
                    turn: Semaphore::new(1),
                    link: RefCell::new(None),
                    failed: Cell::new(None),
                })
            })
            .clone();
        let _turn = slot
            .turn
            .acquire_permit(1)
            .await
            .map_err(|_| "the link's turn closed".to_owned())?;
        if let Some(link) = slot.link.borrow().as_ref().filter(|link| !link.is_closed()) {
            return Ok(link.clone());
        }
        if slot
            .failed
            .get()
            .is_some_and(|at| at.elapsed() < CONNECT_RETRY)
        {
            return Err(format!("{address} refused a connection just now"));
        }
        slot.link.borrow_mut().take();
        match Link::open(address).await {
            Ok(link) => {
                slot.failed.set(None);
                *slot.link.borrow_mut() = Some(link.clone());
                Ok(link)
            }
            Err(problem) => {
                slot.failed.set(Some(Instant::now()));
                Err(format!("cannot connect to {address}: {problem}"))
            }
        }
    }
}

/// One connection to a leader's shard (see the module documentation).
pub struct Link {
    frames: LocalSender<Bytes>,
    /// The fetches waiting for their answer, by correlation id (at most one per replica
    /// followed over the link).
    waiting: RefCell<HashMap<u64, LocalSender<Response>>>,
    next_id: Cell<u64>,
    closed: Cell<bool>,
    /// When bytes last came in (or the link was made).
    last_read: Cell<Instant>,
    /// Stop the reader and the writer task (a write to a peer that went silent may wait for
    /// minutes: the connection goes with the link, not when TCP gives up).
    stop_reading: LocalSender<()>,
    stop_writing: LocalSender<()>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("waiting", &self.waiting.borrow().len())
            .field("closed", &self.closed.get())
            .finish()
    }
}

/// Takes a cancelled call's entry out of the link's waiting fetches.
struct Forget<'a> {
    link: &'a Link,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.link.waiting.borrow_mut().remove(&self.id);
    }
}

impl Link {
    async fn open(address: SocketAddr) -> std::io::Result<Rc<Link>> {
        let stream = TcpStream::connect_timeout(address, CONNECT_WAIT).await?;
        stream.set_nodelay(true)?;
        let (mut reader, mut writer) = futures_lite::io::split(stream);
        let (frames, outgoing) = local_channel::new_bounded::<Bytes>(LINK_FRAMES_MAX);
        let (stop_reading, reading_stopped) = local_channel::new_bounded::<()>(1);
        let (stop_writing, writing_stopped) = local_channel::new_bounded::<()>(1);
        let link = Rc::new(Link {
            frames,
            waiting: RefCell::new(HashMap::new()),
            next_id: Cell::new(1),
            closed: Cell::new(false),
            last_read: Cell::new(Instant::now()),
            stop_reading,
            stop_writing,
        });
        // Frames go out whole, from a task of their own: a write interrupted halfway would
        // corrupt the link for every replica on it. Ends once every holder of the link let
        // it go.
        let writing: Weak<Link> = Rc::downgrade(&link);
        glommio::spawn_local(async move {
            let sending = async {
                while let Some(frame) = outgoing.recv().await {
                    if writer.write_all(&frame).await.is_err() {
                        if let Some(link) = writing.upgrade() {
                            link.close();
                        }
                        return;
                    }
                }
                let _ = writer.close().await;
            };
            future::or(sending, async {
                let _ = writing_stopped.recv().await;
            })
            .await;
        })
        .detach();
        let reading: Weak<Link> = Rc::downgrade(&link);
        glommio::spawn_local(async move {
            let decoder = FrameDecoder::new(RESPONSE_SIZE_MAX);
            let mut buffer = BytesMut::new();
            let mut chunk = vec![0u8; 64 << 10];
            let problem = 'read: loop {
                loop {
                    let frame = match decoder.decode(&mut buffer) {
                        Ok(Some(frame)) => frame,
                        Ok(None) => break,
                        Err(error) => break 'read error.to_string(),
                    };
                    let Some(link) = reading.upgrade() else {
                        return;
                    };
                    let answer = match Response::decode(&frame) {
                        Ok(answer) => answer,
                        Err(error) => break 'read error.to_string(),
                    };
                    let waiter = link.waiting.borrow_mut().remove(&frame.head.correlation_id);
                    // No waiter: a progress report's answer, or a fetch given up.
                    if let Some(waiter) = waiter {
                        let _ = waiter.try_send(answer);
                    }
                }
                let read = future::or(async { Some(reader.read(&mut chunk).await) }, async {
                    let _ = reading_stopped.recv().await;
                    None
                })
                .await;
                match read {
                    None => return,
                    Some(Ok(0)) => break "the leader closed the link".to_owned(),
                    Some(Ok(read)) => {
                        buffer.extend_from_slice(&chunk[..read]);
                        if let Some(link) = reading.upgrade() {
                            link.last_read.set(Instant::now());
                        }
                    }
                    Some(Err(error)) => break error.to_string(),
                }
            };
            tracing::debug!(%address, "the link to a leader failed: {problem}");
            if let Some(link) = reading.upgrade() {
                link.close();
            }
        })
        .detach();
        Ok(link)
    }

    /// Whether the link failed or was closed (a new one is made for the next fetch).
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// How long nothing came in over the link.
    pub fn silent_for(&self) -> Duration {
        self.last_read.get().elapsed()
    }

    /// Closes the link for all its fetchers: their waiting calls fail at once.
    pub fn close(&self) {
        self.closed.set(true);
        self.waiting.borrow_mut().clear();
        let _ = self.stop_reading.try_send(());
        let _ = self.stop_writing.try_send(());
    }

    fn next_id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    /// Sends `request` and waits for its answer (cancel-safe: a dropped call forgets it).
    pub async fn call(&self, request: &Request) -> Result<Response, String> {
        if self.is_closed() {
            return Err("the link to the leader closed".to_owned());
        }
        let id = self.next_id();
        let (answer, answered) = local_channel::new_bounded(1);
        self.waiting.borrow_mut().insert(id, answer);
        let _forget = Forget { link: self, id };
        self.frames
            .send(request.to_frame(id))
            .await
            .map_err(|_| "the link's writer stopped".to_owned())?;
        answered
            .recv()
            .await
            .ok_or_else(|| "the link to the leader closed".to_owned())
    }

    /// Sends `request` without waiting for its answer (a progress report).
    pub async fn send(&self, request: &Request) -> Result<(), String> {
        if self.is_closed() {
            return Err("the link to the leader closed".to_owned());
        }
        let id = self.next_id();
        self.frames
            .send(request.to_frame(id))
            .await
            .map_err(|_| "the link's writer stopped".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_no_fetcher_uses_are_closed_when_a_new_one_is_made() {
        let listeners: Vec<std::net::TcpListener> = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let addresses: Vec<SocketAddr> = listeners
            .iter()
            .map(|listener| listener.local_addr().unwrap())
            .collect();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let links = Links::default();
                let held = links.get(addresses[0]).await.unwrap();
                let idle = links.get(addresses[1]).await.unwrap();
                // The same address: the same link.
                assert!(Rc::ptr_eq(&held, &links.get(addresses[0]).await.unwrap()));
                drop(idle);
                assert_eq!(links.count(), 2);
                // A new address: the link nobody holds goes, the held one stays.
                let _third = links.get(addresses[2]).await.unwrap();
                assert_eq!(links.count(), 2);
                assert!(!held.is_closed());
                let again = links.get(addresses[1]).await.unwrap();
                assert!(!again.is_closed());
                drop(listeners);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
