//! The APIs and versions Spate serves on its Kafka port, advertised in ApiVersions exactly as
//! implemented. Versions follow the needs of the oldest client Spate supports (Debian 12's
//! librdkafka 2.0.2 behind `kcat` 1.7 sends ApiVersions v3, Metadata v4, Produce v7,
//! ListOffsets v2 and Fetch v11) and stop before topic ids (Produce and Fetch v13), which
//! Spate does not have.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};

/// (API, lowest, highest version) served.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    // v0-v2 only so that librdkafka before 2.11.1 compresses (`frame::decode_legacy_produce`).
    (ApiKey::Produce, 0, 12),
    (ApiKey::Fetch, 4, 12),
    // v7 adds the newest timestamp (-3); v8+ are for tiered storage.
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    // KIP-320: where a leader epoch's records end, so consumers detect truncation after a
    // leader change (librdkafka asks with v2 only).
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    // Consumer groups (`groups`): the gateway is every group's coordinator; transactions
    // are refused.
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    // v9 is for the KIP-848 protocol (member epochs), which Spate does not serve.
    (ApiKey::OffsetCommit, 2, 8),
    // v1 has no error field: a coordinator still loading would read as "nothing committed".
    (ApiKey::OffsetFetch, 2, 8),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    // Idempotent producers (the default of current clients) start with it; v5+ are
    // transaction (KIP-890) additions.
    (ApiKey::InitProducerId, 0, 4),
    // Topics' settings and the gateway's (`admin`); v0 was removed from Kafka 4.
    (ApiKey::DescribeConfigs, 1, 4),
    // Answered INVALID_PARTITIONS: partitions are fixed at creation.
    (ApiKey::CreatePartitions, 0, 3),
    // A topic's retention.ms and retention.bytes (the node's AlterTopic).
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    // Moves partitions' log starts (the node's DeleteRecords).
    (ApiKey::DeleteRecords, 0, 2),
    // One broker (this gateway); v2 adds fenced brokers, which Spate does not have.
    (ApiKey::DescribeCluster, 0, 1),
    // Moving partitions (`moves`, the node's MovePartitions): preferred elections only.
    (ApiKey::ElectLeaders, 0, 2),
    // v1 adds `allow_replication_factor_change` (KIP-860), which Spate does not check.
    (ApiKey::AlterPartitionReassignments, 0, 0),
    (ApiKey::ListPartitionReassignments, 0, 0),
];

/// The range served for `key`, if it is served.
pub fn supported(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(served, _, _)| *served == key)
        .map(|(_, min, max)| (*min, *max))
}

/// The ApiVersions answer body (`error_code` 0, or UNSUPPORTED_VERSION for the fallback).
pub fn api_versions_body(error_code: i16) -> ApiVersionsResponse {
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(
            SUPPORTED
                .iter()
                .map(|(key, min, max)| {
                    ApiVersion::default()
                        .with_api_key(*key as i16)
                        .with_min_version(*min)
                        .with_max_version(*max)
                })
                .collect(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_range_is_one_the_schemas_know() {
        for (key, min, max) in SUPPORTED {
            let mut known = key.valid_versions();
            if *key == ApiKey::Produce {
                // v0-v2 are decoded through v3's schema (frame.rs).
                known.min = 0;
            }
            assert!(min <= max, "{key:?}");
            assert!(
                known.min <= *min && *max <= known.max,
                "{key:?} {min}..={max} outside {known:?}"
            );
        }
    }

    #[test]
    fn the_versions_old_librdkafka_sends_are_served() {
        // librdkafka 2.0.2 (Debian 12): MsgVer2 needs Produce 3 and Fetch 4.
        for (key, version) in [
            (ApiKey::ApiVersions, 3),
            (ApiKey::Metadata, 4),
            (ApiKey::Produce, 3),
            (ApiKey::Produce, 7),
            (ApiKey::ListOffsets, 1),
            (ApiKey::ListOffsets, 2),
            (ApiKey::Fetch, 4),
            (ApiKey::Fetch, 11),
        ] {
            let (min, max) = supported(key).unwrap();
            assert!((min..=max).contains(&version), "{key:?} v{version}");
        }
        // librdkafka before 2.11.1 compresses with gzip, snappy and lz4 only if Produce v0
        // is advertised; zstd needs Produce 7 and Fetch 10.
        assert_eq!(supported(ApiKey::Produce).unwrap().0, 0);
        // Produce and Fetch v13 name topics by id, which Spate does not have.
        assert!(supported(ApiKey::Produce).unwrap().1 < 13);
        assert!(supported(ApiKey::Fetch).unwrap().1 < 13);
    }
}
