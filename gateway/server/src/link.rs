//! `ShardLink`: one pipelined TCP connection from the gateway to one node shard. Frames go
//! out with a correlation id unique on the link; responses come back in any order and are
//! matched to their callers. A broken link fails its callers and is replaced on next use.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use spate_proto::limits::{FRAME_HEADER_SIZE, RESPONSE_SIZE_MAX};
use spate_proto::{Frame, FrameDecoder, Pipeline};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// Frames queued for one shard connection before senders wait.
pub const LINK_QUEUE_MAX: usize = 1024;

/// A connection to a shard that takes this long is logged (with what it took).
const SLOW_CONNECT: std::time::Duration = std::time::Duration::from_millis(200);

/// Bytes read from a shard's connection at least per read.
const LINK_READ_BYTES: usize = 64 << 10;

type Waiters = Arc<Pipeline<oneshot::Sender<Frame>>>;

#[derive(Debug)]
pub struct ShardLink {
    outgoing: mpsc::Sender<(Bytes, Bytes)>,
    waiters: Waiters,
    broken: Arc<AtomicBool>,
    /// The writer and reader tasks, stopped when the link is abandoned.
    tasks: [tokio::task::AbortHandle; 2],
    /// When the link was opened, and when it last brought an answer (ms after that).
    opened: std::time::Instant,
    last_answer_ms: Arc<AtomicU64>,
    /// Where the time to each answer is counted (metrics), shared by the shard's links.
    forward_latency: Option<Arc<spate_ops::Histogram>>,
}

/// Sets the correlation id of a frame's header, copying only the header.
fn with_correlation(frame: &Bytes, id: u64) -> (Bytes, Bytes) {
    let mut header = BytesMut::from(&frame[..FRAME_HEADER_SIZE as usize]);
    spate_proto::frame::FrameHeader::set_correlation_id(&mut header, id);
    (header.freeze(), frame.slice(FRAME_HEADER_SIZE as usize..))
}

impl ShardLink {
    pub async fn connect(address: SocketAddr) -> std::io::Result<ShardLink> {
        let started = std::time::Instant::now();
        let stream = TcpStream::connect(address).await?;
        let took = started.elapsed();
        if took >= SLOW_CONNECT {
            // On loopback a connection takes microseconds; a second means a dropped SYN
            // (TCP retries after its initial 1 s timeout), which stalls every request on
            // the link meanwhile.
            tracing::warn!(%address, took_ms = took.as_millis(), "slow connection to a shard");
        }
        // With nothing listening on a port of the ephemeral range, Linux can connect a socket
        // to itself (simultaneous open); that "shard" would echo our own frames back and hold
        // the port a restarting node needs.
        if stream.local_addr()? == stream.peer_addr()? {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                format!("nothing listens on {address} (the connection reached itself)"),
            ));
        }
        stream.set_nodelay(true)?;
        let (mut reader, mut writer) = stream.into_split();
        let (outgoing, mut queue) = mpsc::channel::<(Bytes, Bytes)>(LINK_QUEUE_MAX);
        let waiters: Waiters = Arc::default();
        let broken = Arc::new(AtomicBool::new(false));
        let writer_broken = broken.clone();
        let writing = tokio::spawn(async move {
            // Header and body of one frame are written back to back by this one task, so
            // frames never interleave on the socket.
            while let Some((header, body)) = queue.recv().await {
                if writer.write_all(&header).await.is_err()
                    || writer.write_all(&body).await.is_err()
                {
                    writer_broken.store(true, Ordering::Relaxed);
                    break;
                }
            }
        });
        let reader_waiters = waiters.clone();
        let reader_broken = broken.clone();
        let opened = std::time::Instant::now();
        let last_answer_ms = Arc::new(AtomicU64::new(0));
        let answered = last_answer_ms.clone();
        let reading = tokio::spawn(async move {
            let decoder = FrameDecoder::new(RESPONSE_SIZE_MAX);
            let mut buffer = BytesMut::with_capacity(LINK_READ_BYTES);
            loop {
                match decoder.decode(&mut buffer) {
                    Ok(Some(frame)) => {
                        let now = u64::try_from(opened.elapsed().as_millis()).unwrap_or(u64::MAX);
                        answered.store(now, Ordering::Relaxed);
                        if let Some(waiter) = reader_waiters.take(frame.head.correlation_id) {
                            let _ = waiter.send(frame);
                        }
                        continue;
                    }
                    Ok(None) => {}
                    Err(_) => break,
                }
                // Room for the rest of the frame being read, reserved at once: a fetch answer
                // of a megabyte would otherwise be moved each time the buffer doubles.
                buffer.reserve(decoder.needed(&buffer).max(LINK_READ_BYTES));
                match reader.read_buf(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            reader_broken.store(true, Ordering::Relaxed);
            // Dropping the senders fails every caller still waiting; later ones are refused.
            reader_waiters.close();
        });
        Ok(ShardLink {
            outgoing,
            waiters,
            broken,
            tasks: [writing.abort_handle(), reading.abort_handle()],
            opened,
            last_answer_ms,
            forward_latency: None,
        })
    }

    /// Counts the time to each answer on this link in `histogram`.
    pub fn with_forward_latency(mut self, histogram: Option<Arc<spate_ops::Histogram>>) -> Self {
        self.forward_latency = histogram;
        self
    }

    /// A request sent at `sent` was answered now (metrics).
    pub fn answered_after(&self, sent: std::time::Instant) {
        if crate::metrics::paused() {
            return;
        }
        if let Some(histogram) = &self.forward_latency {
            histogram.observe_shared(sent.elapsed().as_secs_f64());
        }
    }

    /// How long the link has brought no answer (since it opened, if none yet).
    pub fn silent_for(&self) -> std::time::Duration {
        let last = std::time::Duration::from_millis(self.last_answer_ms.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(last)
    }

    /// Drops the caller waiting under link id `id` (its request passed its deadline): an
    /// answer that still comes is discarded.
    pub fn forget(&self, id: u64) {
        self.waiters.cancel(id);
    }

    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed) || self.outgoing.is_closed()
    }

    /// Gives the link up (a request on it passed its deadline: the shard stopped answering
    /// without closing the connection): every caller still waiting fails as if the
    /// connection broke, the connection is closed, and the next request connects anew.
    pub fn abandon(&self) {
        self.broken.store(true, Ordering::Relaxed);
        self.waiters.close();
        for task in &self.tasks {
            task.abort();
        }
    }

    /// Queues a whole frame (its correlation id rewritten; the body is not copied) and returns
    /// where its response will arrive (with the link's correlation id). Frames queued by one
    /// caller in order reach the shard in that order. `None` if the link is broken.
    pub async fn send(&self, frame: &Bytes) -> Option<(u64, oneshot::Receiver<Frame>)> {
        let (sender, receiver) = oneshot::channel();
        let id = self.waiters.register(sender)?;
        if self
            .outgoing
            .send(with_correlation(frame, id))
            .await
            .is_err()
        {
            self.waiters.cancel(id);
            return None;
        }
        Some((id, receiver))
    }
}
