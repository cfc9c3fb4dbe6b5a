//! `Inbound`: what a connection has received and not yet split into frames.
//!
//! Small frames are read in chunks into one buffer and split off it. A frame whose missing
//! part is large (a produce request's batch) is read straight into a buffer of its own, of
//! exactly its size: nothing copies its bytes between the socket and the partition's write
//! round (the round's device buffer is the one copy on the node), no buffer regrows under it,
//! and the batch that the log keeps until it is written (and the tail cache after) keeps only
//! its own frame's memory alive. Memory is touched as bytes arrive, never for what a header
//! only announced.

use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncReadExt};
use spate_proto::{Frame, FrameDecoder, FrameError};

/// Bytes asked of the socket per read while frames are small.
pub const READ_CHUNK_BYTES: usize = 64 << 10;

/// A frame still missing at least this many bytes once its header has arrived is read
/// straight into its own buffer. Below it, the chunked reads' copy costs less than the
/// buffer's zeroing and allocation.
pub const DIRECT_READ_BYTES_MIN: usize = 64 << 10;

/// A large frame being read into a buffer reserved for all of it: its bytes so far are
/// `frame[..filled]`. The buffer is zeroed (so it can be read into) only a chunk ahead of what
/// arrived: a peer that sends a header announcing a megabyte and stalls makes the node touch
/// no more memory than if it had sent a small frame.
#[derive(Debug)]
struct Large {
    frame: BytesMut,
    filled: usize,
    size: usize,
}

#[derive(Debug)]
pub struct Inbound {
    /// Received bytes not yet split into frames (when no large frame is being read).
    buffer: BytesMut,
    chunk: Vec<u8>,
    /// A large frame being read into its own buffer.
    large: Option<Large>,
}

impl Default for Inbound {
    fn default() -> Self {
        Inbound {
            buffer: BytesMut::with_capacity(READ_CHUNK_BYTES),
            chunk: vec![0; READ_CHUNK_BYTES],
            large: None,
        }
    }
}

impl Inbound {
    /// Whether no frame has started arriving.
    pub fn is_empty(&self) -> bool {
        self.buffer.is_empty() && self.large.is_none()
    }

    /// The bytes not yet split into frames (to name the frame an error answers).
    pub fn buffered(&self) -> &[u8] {
        &self.buffer
    }

    /// Splits off the next whole frame, or `Ok(None)` when more bytes must be read first.
    pub fn next_frame(&mut self, decoder: &FrameDecoder) -> Result<Option<Frame>, FrameError> {
        if self.large.is_some() {
            return Ok(None);
        }
        decoder.decode(&mut self.buffer)
    }

    /// Reads once from `reader`; returns the bytes read (0 at the end of the stream).
    /// Cancel-safe: state changes only before the read is started or after it returned.
    pub async fn read<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        decoder: &FrameDecoder,
    ) -> std::io::Result<usize> {
        let needed = decoder.needed(&self.buffer);
        if self.large.is_none() && needed >= DIRECT_READ_BYTES_MIN {
            // The header is in (a frame's size is known only from it) and was checked
            // against the frame size limit: give the frame its own buffer.
            let size = self.buffer.len() + needed;
            let mut frame = BytesMut::with_capacity(size);
            frame.extend_from_slice(&self.buffer);
            let filled = frame.len();
            self.buffer.clear();
            self.large = Some(Large {
                frame,
                filled,
                size,
            });
        }
        if let Some(large) = &mut self.large {
            let until = (large.filled + READ_CHUNK_BYTES).min(large.size);
            if large.frame.len() < until {
                large.frame.resize(until, 0);
            }
            let read = reader.read(&mut large.frame[large.filled..until]).await?;
            large.filled += read;
            if large.filled == large.size {
                if let Some(large) = self.large.take() {
                    self.buffer = large.frame;
                }
            }
            return Ok(read);
        }
        let read = reader.read(&mut self.chunk).await?;
        self.buffer.extend_from_slice(&self.chunk[..read]);
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spate_proto::{Durability, PartitionId, ProduceRequest, Request};

    fn produce_frame(correlation: u64, batch_len: usize) -> bytes::Bytes {
        Request::Produce(ProduceRequest {
            topic: "t".into(),
            partition: PartitionId(0),
            durability: Durability::Fsync,
            batch: bytes::Bytes::from(vec![7u8; batch_len]),
        })
        .to_frame(correlation)
    }

    /// A reader that returns at most `step` bytes per read.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.step).min(self.data.len() - self.at);
            let at = self.at;
            buf[..n].copy_from_slice(&self.data[at..at + n]);
            self.at += n;
            std::task::Poll::Ready(Ok(n))
        }
    }

    #[test]
    fn a_large_frame_touches_memory_only_as_its_bytes_arrive() {
        let frame = produce_frame(1, 1_000_000);
        let decoder = FrameDecoder::new(spate_proto::limits::REQUEST_SIZE_MAX);
        // The header and 100 KB of the body arrive, then the peer stalls.
        let mut reader = Trickle {
            data: frame[..100_000].to_vec(),
            at: 0,
            step: 1 << 20,
        };
        let mut inbound = Inbound::default();
        futures_lite::future::block_on(async {
            while inbound.read(&mut reader, &decoder).await.unwrap() > 0 {}
        });
        let large = inbound.large.as_ref().expect("reading a large frame");
        assert_eq!((large.filled, large.size), (100_000, frame.len()));
        assert!(large.frame.len() <= large.filled + READ_CHUNK_BYTES);
        assert!(inbound.next_frame(&decoder).unwrap().is_none());
    }

    #[test]
    fn small_and_large_frames_come_out_whole_and_in_order() {
        let sizes = [10, 300_000, 50, 70_000, 1_000_000, 5];
        let frames: Vec<bytes::Bytes> = sizes
            .iter()
            .enumerate()
            .map(|(index, &len)| produce_frame(index as u64, len))
            .collect();
        let decoder = FrameDecoder::new(spate_proto::limits::REQUEST_SIZE_MAX);
        for step in [1 << 20, 100_000, 4096, 17] {
            let mut reader = Trickle {
                data: frames.concat(),
                at: 0,
                step,
            };
            let mut inbound = Inbound::default();
            let mut out = Vec::new();
            futures_lite::future::block_on(async {
                loop {
                    while let Some(frame) = inbound.next_frame(&decoder).unwrap() {
                        out.push(frame.bytes().clone());
                    }
                    if inbound.read(&mut reader, &decoder).await.unwrap() == 0 {
                        break;
                    }
                }
            });
            assert_eq!(out, frames, "reads of {step} bytes");
            assert!(inbound.is_empty());
        }
    }
}
