//! Sightline's data lake: the layout of its objects, the Parquet schema of raw and invalid
//! events, and where the objects are stored.
//!
//! - [`layout`]: Hive-style keys (`raw/events/tenant=T/date=D/hour=H/part-{id}.parquet`,
//!   `errors/events/date=D/reason=R/part-{id}.parquet`) with ids derived from batch ids;
//! - [`schema`] and [`parquet`]: Arrow schemas mirroring `Event` and `InvalidEvent`, zstd
//!   Parquet writers and readers;
//! - [`store`]: the [`ObjectStore`] trait with [`LocalStore`] (a folder) and [`S3Store`];
//! - [`writer`]: broker batches to objects at their deterministic keys;
//! - [`config`]: the `[lake]` section;
//! - [`arrow_store`]: the lake as an `object_store::ObjectStore`, for DataFusion.
//!
//! See the README for the pitfalls.

pub mod arrow_store;
pub mod config;
mod error;
pub mod layout;
pub mod parquet;
pub mod s3;
pub mod schema;
pub mod store;
pub mod writer;

pub use config::{LakeConfig, LakeKind, S3Config};
pub use error::LakeError;
pub use s3::S3Store;
pub use store::{LocalStore, ObjectStore};
pub use writer::{
    encode_invalid_batches, encode_raw_batches, invalid_keys, put_all, raw_keys,
    write_invalid_batches, write_raw_batches,
};
