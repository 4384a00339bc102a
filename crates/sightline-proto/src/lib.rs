//! Generated protobuf and gRPC code for Sightline's wire contracts in `proto/`.
//!
//! Each package `sightline.<area>.v1` becomes the module `sightline_proto::<area>::v1`.

/// The encoded `FileDescriptorSet` of every compiled file, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sightline_descriptor.bin"));

/// The serving API: `sightline.query.v1`.
pub mod query {
    /// Version 1 of the query API.
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        include!(concat!(env!("OUT_DIR"), "/sightline.query.v1.rs"));
    }
}

/// Events on the broker: `sightline.events.v1`.
pub mod events {
    /// Version 1 of the event contract.
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        include!(concat!(env!("OUT_DIR"), "/sightline.events.v1.rs"));

        impl EventType {
            /// The Segment call name (`track`, `page`, …; `unspecified` for the zero value).
            pub fn segment_name(self) -> &'static str {
                match self {
                    Self::Unspecified => "unspecified",
                    Self::Track => "track",
                    Self::Page => "page",
                    Self::Screen => "screen",
                    Self::Identify => "identify",
                    Self::Group => "group",
                    Self::Alias => "alias",
                }
            }

            /// The type of a Segment call name; `None` for anything else.
            pub fn from_segment_name(name: &str) -> Option<Self> {
                Some(match name {
                    "track" => Self::Track,
                    "page" => Self::Page,
                    "screen" => Self::Screen,
                    "identify" => Self::Identify,
                    "group" => Self::Group,
                    "alias" => Self::Alias,
                    _ => return None,
                })
            }
        }
    }
}

/// The pipeline ledger (etl-metrics): `sightline.pipeline.v1`.
pub mod pipeline {
    /// Version 1 of the ledger contract.
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        include!(concat!(env!("OUT_DIR"), "/sightline.pipeline.v1.rs"));
    }
}
