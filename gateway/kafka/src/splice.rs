//! Fetch responses written around the records instead of copying them: the response is
//! encoded by the schemas (`kafka-protocol`) with each partition's records left out, then
//! cut where the records belong, so the record bytes — slices of the node's answer — go to
//! the socket as they are. Written back to back, the pieces are exactly the bytes
//! [`crate::frame::encode_response`] makes of the same response with the records in place
//! (tested for every served version).
//!
//! The cuts rely on the schemas' field order for the served versions (Fetch v4-v12): the
//! topics are the last field of the response and the partitions the last field of a topic,
//! before only the tagged fields (none are set: one zero byte in flexible versions); a
//! partition's records field is found by encoding it once with no records (null) and once
//! with empty records and taking the first byte where the two differ.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseHeader};
use kafka_protocol::protocol::Encodable;

use crate::batch::KafkaRecords;

/// Record slices shorter than this are copied into the surrounding piece (a copy of a few
/// KiB costs less than another write call).
pub const SPLICE_BYTES_MIN: usize = 16 << 10;

/// The first version with flexible (compact) encodings.
const FLEXIBLE_FROM: i16 = 12;

/// A response as pieces to write back to back.
#[derive(Debug, Default)]
struct Pieces {
    done: Vec<Bytes>,
    current: BytesMut,
    len: usize,
}

impl Pieces {
    fn copy(&mut self, bytes: &[u8]) {
        self.current.put_slice(bytes);
        self.len += bytes.len();
    }

    fn share(&mut self, bytes: &Bytes) {
        if bytes.len() < SPLICE_BYTES_MIN {
            self.copy(bytes);
            return;
        }
        if !self.current.is_empty() {
            self.done.push(self.current.split().freeze());
        }
        self.done.push(bytes.clone());
        self.len += bytes.len();
    }

    fn finish(mut self) -> Vec<Bytes> {
        if !self.current.is_empty() {
            self.done.push(self.current.split().freeze());
        }
        self.done
    }
}

fn encoded<T: Encodable>(value: &T, version: i16) -> Option<Bytes> {
    let mut out = BytesMut::with_capacity(value.compute_size(version).ok()?);
    value.encode(&mut out, version).ok()?;
    Some(out.freeze())
}

/// An array's element count as the version encodes it.
fn put_count(out: &mut Pieces, count: usize, flexible: bool) {
    let mut bytes = BytesMut::with_capacity(5);
    if flexible {
        put_unsigned_varint(&mut bytes, u32::try_from(count + 1).unwrap_or(u32::MAX));
    } else {
        bytes.put_i32(i32::try_from(count).unwrap_or(i32::MAX));
    }
    out.copy(&bytes);
}

fn put_unsigned_varint(out: &mut BytesMut, mut value: u32) {
    while value >= 0x80 {
        out.put_u8(u8::try_from(value & 0x7f).unwrap_or(0) | 0x80);
        value >>= 7;
    }
    out.put_u8(u8::try_from(value).unwrap_or(0));
}

/// A struct whose last field (before the tagged fields) is an array, encoded with the array
/// empty: (what comes before the array's count, what comes after the array).
fn around_empty_array(encoded: &Bytes, flexible: bool) -> Option<(Bytes, Bytes)> {
    let (count, tagged) = if flexible { (1, 1) } else { (4, 0) };
    let cut = encoded.len().checked_sub(count + tagged)?;
    Some((encoded.slice(..cut), encoded.slice(cut + count..)))
}

/// One partition with its records in place.
fn put_partition(
    out: &mut Pieces,
    partition: &PartitionData,
    records: Option<&KafkaRecords>,
    version: i16,
    flexible: bool,
) -> Option<()> {
    let Some(records) = records else {
        out.copy(&encoded(partition, version)?);
        return Some(());
    };
    let null = encoded(&partition.clone().with_records(None), version)?;
    let empty = encoded(&partition.clone().with_records(Some(Bytes::new())), version)?;
    let at = null.iter().zip(empty.iter()).position(|(a, b)| a != b)?;
    let marker = if flexible { 1 } else { 4 };
    if null.len() < at + marker || empty.len() != null.len() {
        return None;
    }
    out.copy(&null[..at]);
    let mut prefix = BytesMut::with_capacity(5);
    if flexible {
        put_unsigned_varint(
            &mut prefix,
            u32::try_from(records.len() + 1).unwrap_or(u32::MAX),
        );
    } else {
        prefix.put_i32(i32::try_from(records.len()).unwrap_or(i32::MAX));
    }
    out.copy(&prefix);
    for part in records.parts() {
        out.share(part);
    }
    out.copy(&null[at + marker..]);
    Some(())
}

/// Frames a Fetch response (size, header, body) as pieces to write back to back: the
/// records of partition `i` (in the order of the response's topics and partitions) are
/// `records[i]`, shared rather than copied (slices under [`SPLICE_BYTES_MIN`] are copied);
/// the response's own `records` of those partitions are ignored. `None` if the response
/// does not encode (then the caller encodes it whole).
pub fn encode_fetch_response(
    version: i16,
    correlation_id: i32,
    response: &FetchResponse,
    records: &[Option<KafkaRecords>],
) -> Option<Vec<Bytes>> {
    let flexible = version >= FLEXIBLE_FROM;
    let mut body = Pieces::default();
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let mut head = BytesMut::new();
    header
        .encode(&mut head, ApiKey::Fetch.response_header_version(version))
        .ok()?;
    body.copy(&head);
    let top = encoded(&response.clone().with_responses(Vec::new()), version)?;
    let (before_topics, after_topics) = around_empty_array(&top, flexible)?;
    body.copy(&before_topics);
    put_count(&mut body, response.responses.len(), flexible);
    let mut index = 0usize;
    for topic in &response.responses {
        let shell: FetchableTopicResponse = topic.clone().with_partitions(Vec::new());
        let (before_partitions, after_partitions) =
            around_empty_array(&encoded(&shell, version)?, flexible)?;
        body.copy(&before_partitions);
        put_count(&mut body, topic.partitions.len(), flexible);
        for partition in &topic.partitions {
            let own = records.get(index).and_then(Option::as_ref);
            put_partition(&mut body, partition, own, version, flexible)?;
            index += 1;
        }
        body.copy(&after_partitions);
    }
    body.copy(&after_topics);
    let size = i32::try_from(body.len).ok()?;
    let mut pieces = vec![Bytes::copy_from_slice(&size.to_be_bytes())];
    pieces.extend(body.finish());
    Some(pieces)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::protocol::StrBytes;
    use spate_format::{stamp, BatchBuilder, Offset, Record};

    use super::*;
    use crate::batch::spate_to_kafka;
    use crate::frame::encode_response;

    /// Stamped Spate batches from `base`, one per value size: the node's answer.
    fn node_answer(base: u64, sizes: &[usize]) -> Bytes {
        let mut out = Vec::new();
        let mut offset = base;
        for &size in sizes {
            let value = vec![b'v'; size];
            let mut builder = BatchBuilder::new();
            for _ in 0..3 {
                builder
                    .push(&Record {
                        timestamp: 1_767_225_600_000,
                        value: Some(&value),
                        ..Record::default()
                    })
                    .unwrap();
            }
            let mut batch = builder.finish().unwrap();
            stamp(&mut batch, Offset(offset), 1_767_225_601_234).unwrap();
            offset += 3;
            out.extend_from_slice(&batch);
        }
        Bytes::from(out)
    }

    #[test]
    fn the_pieces_are_the_whole_encoding_in_every_served_version() {
        let answers = [
            Some(node_answer(0, &[40_000, 10, 100_000])),
            None,
            Some(node_answer(7, &[])),
            Some(node_answer(3, &[5])),
        ];
        let converted: Vec<Option<KafkaRecords>> = answers
            .iter()
            .map(|answer| answer.as_ref().map(|bytes| spate_to_kafka(bytes).unwrap()))
            .collect();
        let partition = |index: i32, records: Option<&KafkaRecords>| {
            let data = PartitionData::default()
                .with_partition_index(index)
                .with_high_watermark(100 + i64::from(index))
                .with_last_stable_offset(100 + i64::from(index))
                .with_log_start_offset(i64::from(index));
            match records {
                Some(records) => data.with_records(Some(records.to_contiguous())),
                // An error partition: no records at all.
                None => data.with_error_code(6),
            }
        };
        let topic = |name: &str, partitions| {
            FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_string(name.to_owned())))
                .with_partitions(partitions)
        };
        let whole = FetchResponse::default()
            .with_throttle_time_ms(0)
            .with_session_id(0)
            .with_responses(vec![
                topic(
                    "clicks",
                    vec![
                        partition(0, converted[0].as_ref()),
                        partition(1, converted[1].as_ref()),
                    ],
                ),
                topic(
                    "logs",
                    vec![
                        partition(0, converted[2].as_ref()),
                        partition(5, converted[3].as_ref()),
                    ],
                ),
            ]);
        for version in 4..=12 {
            let expected = encode_response(ApiKey::Fetch, version, 77, &whole);
            let pieces = encode_fetch_response(version, 77, &whole, &converted).unwrap();
            let joined: Vec<u8> = pieces.iter().flat_map(|piece| piece.to_vec()).collect();
            assert_eq!(joined, expected.to_vec(), "v{version}");
            // The large record slices are shared with the node's answer, not copied.
            let shared = pieces
                .iter()
                .filter(|piece| {
                    answers.iter().flatten().any(|answer| {
                        let range = answer.as_ptr_range();
                        range.contains(&piece.as_ptr())
                    })
                })
                .count();
            assert_eq!(shared, 2, "v{version}: the 40 KB and 100 KB batches");
        }
        // Without records given, the response is encoded as it is.
        let none: Vec<Option<KafkaRecords>> = vec![None; 4];
        let pieces = encode_fetch_response(12, 1, &whole, &none).unwrap();
        let joined: Vec<u8> = pieces.iter().flat_map(|piece| piece.to_vec()).collect();
        assert_eq!(
            joined,
            encode_response(ApiKey::Fetch, 12, 1, &whole).to_vec()
        );
    }
}
