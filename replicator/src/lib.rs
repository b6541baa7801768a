//! tandem's data plane: the encrypted contract store of one site and its
//! replication to the others.
//!
//! Module map:
//! - [`write`]: put and destroy at the owner (lease and owner checks,
//!   encryption, durable store, then [`sync`] decides when to acknowledge);
//! - [`read`]: head, list and get (decryption) at any site;
//! - [`ship`]: outgoing replication, one shipper per peer, from the peer's
//!   durable cursor; [`apply`]: incoming entries, checked before storing;
//! - [`sync`]: sync/async with the in-city peer and the way back to sync;
//! - [`digest`]: per-shard digests for anti-entropy and `tandem verify`
//!   (which, like failback, lives in the controller's operations library);
//!   [`gc`]: collection of destroyed ciphertext;
//! - [`meta`]: metadata, change log and cursors over the storage seam;
//!   [`blob`]: ciphertext (local files, or object_store); [`model`]: the
//!   records; [`stage`]: ciphertext streamed to the in-city peer while the
//!   owner stores it;
//! - [`view`]: the controller's shard map and pair modes, and the write lease;
//! - [`service`]: the gRPC services and the handlers of the [`bulk`]
//!   streams (file bytes over HTTP/2 without gRPC's copies); [`server`]:
//!   starts it all;
//!   [`client`]: the client used by the CLI and tests.
//!
//! Crypto lives in `tandem-crypto`; this crate never sees a KEK, and only
//! [`read`] and [`write`] ever hold a plaintext data key.

pub mod anti_entropy;
pub mod apply;
pub mod backup;
pub mod blob;
pub mod blob_stats;
pub mod blob_url;
pub mod bulk;
pub mod bulk_service;
pub mod client;
pub mod config;
pub mod digest;
pub mod divergent;
pub mod error;
pub mod gc;
pub mod hash;
pub mod ids;
pub mod lag;
pub mod meta;
pub mod metrics;
pub mod model;
pub mod parts;
pub mod peer;
pub mod permissions;
pub mod pool;
pub mod prefetch;
pub mod quarantine;
pub mod read;
pub mod restore;
pub mod rotate;
pub mod scrub;
pub mod server;
pub mod service;
pub mod shard_sums;
pub mod ship;
pub mod site;
pub mod stage;
pub mod sync;
pub mod view;
pub mod write;

#[cfg(test)]
mod data_path_tests;

/// Largest message a replicator sends or accepts, gRPC or bulk frame
/// ([`bulk`]); file bytes go in chunks well below it.
pub use tandem_proto::MAX_MESSAGE;
