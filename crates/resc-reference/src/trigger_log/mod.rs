//! Durable trigger-log backends behind [`resc_core::trigger_log::TriggerLog`]
//! (paper §5.2.4: trigger messages are logged before delivery, and failed
//! components re-execute from them).
//!
//! | backend | for | durable when `append` returns |
//! |---|---|---|
//! | [`InMemoryTriggerLog`](resc_core::inproc::InMemoryTriggerLog) (in `resc-core`) | tests, one process | while the process lives |
//! | [`FileTriggerLog`] ([format and recovery](mod@file)) | one node, the embedded default | written to a checksummed segment file and synced per its [`FsyncPolicy`] |
//! | [`JetStreamTriggerLog`] ([layout](jetstream); feature `jetstream`, on by default) | several nodes | stored by a NATS JetStream server (file storage, `replicas` copies) and acknowledged |
//!
//! All three pass the conformance suite `resc_core::testkit::trigger_log`.
//! Positions are opaque offsets: the file log's are dense, JetStream's are
//! stream sequence numbers (completion markers and chunks of large records
//! take sequence numbers too). A Kafka backend would use partition offsets
//! the same way.
//!
//! [`measure`] times appends of every backend side by side.
//!
//! # Example
//!
//! ```
//! use resc_core::ids::InvocationId;
//! use resc_core::trigger_log::{LogPosition, TriggerLog, TriggerRecord, TriggerSource};
//! use resc_reference::trigger_log::{FileLogOptions, FileTriggerLog, FsyncPolicy};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join(format!("resc-doc-log-{}", std::process::id()));
//! let options = FileLogOptions::default().fsync(FsyncPolicy::batched());
//! let input = TriggerRecord {
//!     invocation: InvocationId(7),
//!     source: TriggerSource::External,
//!     payload: b"input".to_vec(),
//! };
//! {
//!     let log = FileTriggerLog::open(&dir, options.clone())?;
//!     log.append(&input)?;
//! } // closed (a crash would do the same: the append was synced)
//!
//! let log = FileTriggerLog::open(&dir, options)?;
//! assert_eq!(log.recovery().torn_tail, None);
//! // Recovery: replay what is pending from its logged inputs.
//! assert_eq!(log.pending()?, vec![InvocationId(7)]);
//! assert_eq!(log.records(InvocationId(7))?[0].1, input);
//! // Done: acknowledge and reclaim.
//! log.complete(InvocationId(7))?;
//! log.truncate_completed()?;
//! assert!(log.read_from(LogPosition::START, 10)?.records.is_empty());
//! # drop(log);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

mod codec;
pub mod file;
mod index;
#[cfg(feature = "jetstream")]
pub mod jetstream;
mod measure;

pub use file::{FileLogOptions, FileTriggerLog, FsyncPolicy, OpenReport, TornTail};
#[cfg(feature = "jetstream")]
pub use jetstream::{JetStreamConfig, JetStreamTriggerLog};
pub use measure::{measure, AppendMeasurement, MeasureOptions};
