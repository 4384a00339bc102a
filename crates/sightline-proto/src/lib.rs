//! Generated protobuf and gRPC code for Sightline's wire contracts in `proto/`.
//!
//! Each package `sightline.<area>.v1` becomes the module `sightline_proto::<area>::v1`.

/// Events on the broker: `sightline.events.v1`.
pub mod events {
    /// Version 1 of the event contract.
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        include!(concat!(env!("OUT_DIR"), "/sightline.events.v1.rs"));
    }
}
