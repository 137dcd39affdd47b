//! Purple's gRPC contracts, generated from `proto/` at build time, and what
//! every caller of a batch RPC shares: the batch limit and the chunking
//! helper that splits a large id set into calls the server accepts.

pub mod batch;
pub mod codec;
mod vocabulary;

/// Shared messages (`purple.common.v1`).
pub mod common {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("purple.common.v1");
    }
}

/// The catalogue service (`purple.ingest.v1`).
pub mod ingest {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("purple.ingest.v1");
    }
}

/// The test workflow service (`purple.campaigns.v1`).
pub mod campaigns {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("purple.campaigns.v1");
    }
}

/// The scoring service (`purple.scoring.v1`).
pub mod scoring {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("purple.scoring.v1");
    }
}

/// The metrics service (`purple.metrics.v1`).
pub mod metrics {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("purple.metrics.v1");
    }
}

/// The encoded file descriptor set of every Purple proto, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/purple_descriptor.bin"));

/// Fully qualified names of the four services, as reflection lists them.
pub const SERVICE_NAMES: [&str; 4] = [
    "purple.ingest.v1.IngestService",
    "purple.campaigns.v1.CampaignsService",
    "purple.scoring.v1.ScoringService",
    "purple.metrics.v1.MetricsService",
];
