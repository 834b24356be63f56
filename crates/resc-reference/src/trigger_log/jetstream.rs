//! The distributed trigger log: a NATS JetStream stream.
//!
//! # In the stream
//!
//! One stream per log, with file storage and `replicas` copies, on the
//! subjects `resc.tlog.<stream>.>`:
//!
//! | subject | payload | sequence = |
//! |---|---|---|
//! | `….rec` | `0`, then the encoded record; or, for a record larger than one message, `1`, the invocation (`u64`), the chunk count (`u32`) and the chunks' sequences (`u64` each) | the record's position |
//! | `….chunk` | a piece of a large record's encoding | — |
//! | `….done` | the completed invocation (`u64`) | — |
//! | `….trunc` | the truncation point (`u64`) | — |
//!
//! (little-endian). Positions are stream sequence numbers of `….rec`
//! messages; the other messages take sequence numbers too, so positions
//! have gaps. Every write is a JetStream publish whose acknowledgement is
//! awaited: the server acknowledges once the message is stored (on a
//! quorum of the replicas), which is JetStream's durability; with file
//! storage the server syncs to disk on its own schedule (`sync_interval`,
//! two minutes by default), so a replica's power loss is covered by the
//! other replicas, not by an fsync.
//!
//! `pending` and `records` replay the stream into an in-memory index,
//! incrementally (each call first reads what was published since the last),
//! so several processes may share one log; a process opening a log replays
//! it from the start. `truncate` publishes a `….trunc` marker (the logical
//! start, which every reader honours at once) and then purges `….rec`,
//! `….done` and older markers before the point.
//!
//! # Large records
//!
//! A message holds at most the server's `max_payload` (1 MiB by default).
//! A larger record is published as chunks first, then as a `….rec` message
//! listing them, so it becomes visible all at once at the position of that
//! last message. Chunks are reclaimed by a truncation only below the lowest
//! chunk of any remaining record and below the end of the stream as it was
//! [`chunk_grace`](JetStreamConfig::chunk_grace) ago (as seen by this
//! process); an append gives up, without publishing its `….rec` message,
//! when its chunks took longer than half that grace, so a truncation never
//! takes the chunks of a record still being appended.
//!
//! # Runtime
//!
//! The trait is synchronous; the log owns a one-worker tokio runtime that
//! runs the `async-nats` client. Each call hands its work to that runtime
//! and blocks the calling thread until it is done (each server request is
//! bounded by [`JetStreamConfig::timeout`]; a write as a whole by 4 of them,
//! a read or truncation, which may replay the stream, by 30), so the
//! methods may be called from
//! any thread, also from inside another tokio runtime (where they block
//! that runtime's worker while they wait).

use super::codec::{self, Reader};
use super::index::PendingIndex;
use async_nats::connection::State as ConnectionState;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use resc_core::ids::InvocationId;
use resc_core::trigger_log::{LogError, LogPosition, ReadBatch, TriggerLog, TriggerRecord};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TAG_INLINE: u8 = 0;
const TAG_CHUNKED: u8 = 1;
/// Room left in a message for the protocol and headers.
const HEADROOM: usize = 4096;

/// Where and how to keep a [`JetStreamTriggerLog`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JetStreamConfig {
    /// The NATS server, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// The stream's name: letters, digits, `-` and `_`. Created (file
    /// storage) if missing.
    pub stream: String,
    /// Copies the stream keeps: 1 on a single server, 3 or 5 in a cluster.
    /// Used only when the stream is created.
    pub replicas: usize,
    /// How long to wait for the server: connecting, each request, each
    /// publish acknowledgement. 5 s by default.
    pub timeout: Duration,
    /// The largest message the log publishes; a record that does not fit is
    /// chunked. By default the server's `max_payload` less 4 KiB.
    pub chunk_bytes: Option<usize>,
    /// How old the chunks of large records must be before a truncation may
    /// reclaim them (10 minutes by default); see the
    /// [module documentation](self).
    pub chunk_grace: Duration,
}

impl JetStreamConfig {
    /// A log in `stream` on the server at `url`, with one replica.
    pub fn new(url: impl Into<String>, stream: impl Into<String>) -> Self {
        JetStreamConfig {
            url: url.into(),
            stream: stream.into(),
            replicas: 1,
            timeout: Duration::from_secs(5),
            chunk_bytes: None,
            chunk_grace: Duration::from_secs(600),
        }
    }

    /// This config with `replicas` copies.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas.max(1);
        self
    }

    /// This config with another timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// This config with messages of at most `bytes` (at least 1 KiB).
    pub fn chunk_bytes(mut self, bytes: usize) -> Self {
        self.chunk_bytes = Some(bytes.max(1024));
        self
    }

    /// This config with another chunk grace period.
    pub fn chunk_grace(mut self, grace: Duration) -> Self {
        self.chunk_grace = grace;
        self
    }
}

/// A [`TriggerLog`] in a NATS JetStream stream, for deployments past one
/// machine. See the [module documentation](self) for the layout and the
/// guarantees.
pub struct JetStreamTriggerLog {
    inner: Arc<Inner>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for JetStreamTriggerLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamTriggerLog").field("config", &self.inner.config).finish()
    }
}

struct Inner {
    config: JetStreamConfig,
    client: async_nats::Client,
    stream: stream::Stream,
    rec: String,
    chunk: String,
    done: String,
    trunc: String,
    chunk_bytes: usize,
    index: tokio::sync::Mutex<Index>,
    /// (when, the stream's next sequence then), for reclaiming chunks: the
    /// newest one older than the chunk grace, and newer ones.
    snapshots: Mutex<VecDeque<(Instant, u64)>>,
}

#[derive(Default)]
struct Index {
    /// Every sequence before this one has been replayed.
    upto: u64,
    /// Pending invocations; a record's location is its chunks' sequences.
    pending: PendingIndex<Vec<u64>>,
    /// Record sequence → its lowest chunk sequence, for every record with
    /// chunks not yet truncated.
    chunked: BTreeMap<u64, u64>,
}

/// A `….rec` message's head: the invocation and the chunks, if any.
struct RecHead {
    invocation: InvocationId,
    chunks: Vec<u64>,
}

fn valid_stream_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 200 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl JetStreamTriggerLog {
    /// Connects to the server and opens (creating if missing) the stream.
    /// Fails with [`LogError::Unavailable`], naming the URL, when the server
    /// cannot be reached.
    pub fn connect(config: JetStreamConfig) -> Result<Self, LogError> {
        if !valid_stream_name(&config.stream) {
            return Err(LogError::storage(
                format!("opening the JetStream stream {:?}", config.stream),
                "a stream name is 1 to 200 letters, digits, '-' or '_'",
            ));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("resc-jetstream")
            .enable_all()
            .build()
            .map_err(|e| LogError::storage("starting the JetStream log's runtime", e))?;
        let (limit, url) = (config.timeout * 4, config.url.clone());
        let inner = run_on(&runtime, limit, &url, Inner::connect(config))?;
        Ok(JetStreamTriggerLog { inner: Arc::new(inner), runtime: Some(runtime) })
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &JetStreamConfig {
        &self.inner.config
    }

    /// The largest message the log publishes (larger records are chunked).
    pub fn chunk_bytes(&self) -> usize {
        self.inner.chunk_bytes
    }

    /// How many messages and bytes the stream stores now (records,
    /// chunks, completion and truncation markers together).
    pub fn stored(&self) -> Result<(u64, u64), LogError> {
        self.run(|inner| async move {
            let info = inner
                .stream
                .get_info()
                .await
                .map_err(|e| inner.fail(format!("reading the state of the stream {}", inner.config.stream), e))?;
            Ok((info.state.messages, info.state.bytes))
        })
    }

    /// Deletes the stream and everything in it (tests, decommissioning).
    pub fn delete_stream(self) -> Result<(), LogError> {
        self.run(|inner| async move {
            let js = jetstream::new(inner.client.clone());
            js.delete_stream(&inner.config.stream)
                .await
                .map(drop)
                .map_err(|e| inner.fail(format!("deleting the stream {}", inner.config.stream), e))
        })
    }

    /// Runs a write (one record, a marker): a few server round trips, or
    /// several publishes for a chunked record.
    fn run<T, F>(&self, work: impl FnOnce(Arc<Inner>) -> F) -> Result<T, LogError>
    where
        F: Future<Output = Result<T, LogError>> + Send + 'static,
        T: Send + 'static,
    {
        self.run_for(4, work)
    }

    /// Runs work that may replay much of the stream (the first `pending`
    /// of a process replays all of it): every request is bounded by the
    /// timeout, the whole by 30 timeouts.
    fn run_long<T, F>(&self, work: impl FnOnce(Arc<Inner>) -> F) -> Result<T, LogError>
    where
        F: Future<Output = Result<T, LogError>> + Send + 'static,
        T: Send + 'static,
    {
        self.run_for(30, work)
    }

    fn run_for<T, F>(&self, timeouts: u32, work: impl FnOnce(Arc<Inner>) -> F) -> Result<T, LogError>
    where
        F: Future<Output = Result<T, LogError>> + Send + 'static,
        T: Send + 'static,
    {
        let runtime = self.runtime.as_ref().ok_or_else(|| LogError::storage("using the JetStream log", "closed"))?;
        run_on(runtime, self.inner.config.timeout * timeouts, &self.inner.config.url, work(self.inner.clone()))
    }
}

/// Runs `work` on `runtime` and waits for it, at most `limit`.
fn run_on<T, F>(runtime: &tokio::runtime::Runtime, limit: Duration, url: &str, work: F) -> Result<T, LogError>
where
    F: Future<Output = Result<T, LogError>> + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let endpoint = url.to_string();
    runtime.spawn(async move {
        let result = match tokio::time::timeout(limit, work).await {
            Ok(result) => result,
            Err(_) => {
                Err(LogError::Unavailable { endpoint, reason: format!("no answer within {} ms", limit.as_millis()) })
            }
        };
        let _ = tx.send(result);
    });
    rx.recv().map_err(|_| LogError::storage("waiting for the JetStream log", "its runtime stopped"))?
}

impl Drop for JetStreamTriggerLog {
    fn drop(&mut self) {
        // Never blocks, also when dropped inside another runtime. Every
        // write was acknowledged already; only background clean-ups (of
        // read consumers, which expire on their own) may be cut short.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Inner {
    async fn connect(config: JetStreamConfig) -> Result<Inner, LogError> {
        let client = async_nats::ConnectOptions::new()
            .name("resc-trigger-log")
            .connection_timeout(config.timeout)
            .request_timeout(Some(config.timeout))
            .connect(config.url.as_str())
            .await
            .map_err(|e| LogError::Unavailable { endpoint: config.url.clone(), reason: e.to_string() })?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(config.timeout);
        let prefix = format!("resc.tlog.{}", config.stream);
        let wanted = format!("{prefix}.>");
        let stream = js
            .get_or_create_stream(stream::Config {
                name: config.stream.clone(),
                subjects: vec![wanted.clone()],
                storage: stream::StorageType::File,
                num_replicas: config.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| {
                LogError::storage(format!("opening the JetStream stream {} on {}", config.stream, config.url), e)
            })?;
        if !stream.cached_info().config.subjects.contains(&wanted) {
            return Err(LogError::storage(
                format!("opening the JetStream stream {} on {}", config.stream, config.url),
                format!(
                    "the stream exists with subjects {:?}, not {wanted:?}: it is not a trigger log",
                    stream.cached_info().config.subjects
                ),
            ));
        }
        let max_payload = client.server_info().max_payload;
        let chunk_bytes = config.chunk_bytes.unwrap_or(max_payload.saturating_sub(HEADROOM)).max(1024);
        let next = stream.cached_info().state.last_sequence + 1;
        Ok(Inner {
            rec: format!("{prefix}.rec"),
            chunk: format!("{prefix}.chunk"),
            done: format!("{prefix}.done"),
            trunc: format!("{prefix}.trunc"),
            config,
            client,
            stream,
            chunk_bytes,
            index: tokio::sync::Mutex::new(Index::default()),
            snapshots: Mutex::new(VecDeque::from([(Instant::now(), next)])),
        })
    }

    /// An error from the server or the client: `Unavailable` while
    /// disconnected, `Storage` otherwise.
    fn fail(&self, context: impl Into<String>, e: impl std::fmt::Display) -> LogError {
        match self.client.connection_state() {
            ConnectionState::Connected => LogError::storage(context, e),
            _ => LogError::Unavailable {
                endpoint: self.config.url.clone(),
                reason: format!("{}: {e} (disconnected)", context.into()),
            },
        }
    }

    fn location(&self, sequence: u64) -> String {
        format!("JetStream stream {} sequence {sequence} on {}", self.config.stream, self.config.url)
    }

    async fn publish(&self, subject: &str, payload: Vec<u8>) -> Result<u64, LogError> {
        let js = self.js();
        let ack = js
            .publish(subject.to_string(), Bytes::from(payload))
            .await
            .map_err(|e| self.fail(format!("publishing to {subject}"), e))?
            .await
            .map_err(|e| self.fail(format!("awaiting the acknowledgement of {subject}"), e))?;
        self.note(ack.sequence + 1);
        Ok(ack.sequence)
    }

    /// Notes that the stream's next sequence is at least `next` now, and
    /// returns the same as of `chunk_grace` ago, if known: chunks below it
    /// were published more than the grace period ago.
    fn note(&self, next: u64) -> Option<u64> {
        let now = Instant::now();
        let grace = self.config.chunk_grace;
        let mut snapshots = self.snapshots.lock();
        match snapshots.back_mut() {
            // A recent snapshot moves forward (still true: `next` was seen now).
            Some(back) if now - back.0 < grace / 8 => *back = (now, back.1.max(next)),
            _ => snapshots.push_back((now, next)),
        }
        // Keep the newest snapshot older than the grace, and the newer ones.
        while snapshots.get(1).is_some_and(|(t, _)| now - *t >= grace) {
            snapshots.pop_front();
        }
        snapshots.front().filter(|(t, _)| now - *t >= grace).map(|(_, seq)| *seq)
    }

    fn js(&self) -> jetstream::Context {
        let mut js = jetstream::new(self.client.clone());
        js.set_timeout(self.config.timeout);
        js
    }

    async fn append(self: Arc<Self>, record: TriggerRecord) -> Result<LogPosition, LogError> {
        let len = codec::encoded_len(&record)?;
        let mut message = Vec::with_capacity(1 + len);
        message.push(TAG_INLINE);
        codec::encode_record(&record, &mut message);
        if message.len() <= self.chunk_bytes {
            return self.publish(&self.rec, message).await.map(LogPosition);
        }
        // Chunks first, pipelined; then the record message that lists them.
        let started = Instant::now();
        let js = self.js();
        let mut acks = Vec::new();
        for piece in message[1..].chunks(self.chunk_bytes) {
            let ack = js
                .publish(self.chunk.clone(), Bytes::copy_from_slice(piece))
                .await
                .map_err(|e| self.fail(format!("publishing a chunk to {}", self.chunk), e))?;
            acks.push(ack);
        }
        let mut chunks = Vec::with_capacity(acks.len());
        for ack in acks {
            let ack =
                ack.await.map_err(|e| self.fail(format!("awaiting a chunk's acknowledgement on {}", self.chunk), e));
            match ack {
                Ok(ack) => chunks.push(ack.sequence),
                Err(e) => {
                    self.abandon(&chunks).await;
                    return Err(e);
                }
            }
        }
        if started.elapsed() > self.config.chunk_grace / 2 {
            self.abandon(&chunks).await;
            return Err(LogError::storage(
                format!("appending a {len}-byte record to {}", self.config.stream),
                "its chunks took longer than half the chunk grace period; not published",
            ));
        }
        let mut head = Vec::with_capacity(13 + 8 * chunks.len());
        head.push(TAG_CHUNKED);
        head.extend_from_slice(&record.invocation.0.to_le_bytes());
        head.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
        for seq in &chunks {
            head.extend_from_slice(&seq.to_le_bytes());
        }
        if head.len() > self.chunk_bytes {
            self.abandon(&chunks).await;
            return Err(LogError::TooLarge { bytes: len as u64, max: (self.chunk_bytes as u64).pow(2) / 8 });
        }
        self.publish(&self.rec, head).await.map(LogPosition)
    }

    /// Deletes the chunks of an append that gave up (best effort: the
    /// truncation reclaims what is left).
    async fn abandon(&self, chunks: &[u64]) {
        for &seq in chunks {
            let _ = self.stream.delete_message(seq).await;
        }
    }

    fn parse_head(&self, sequence: u64, payload: &[u8]) -> Result<RecHead, LogError> {
        let corrupt = |reason: String| LogError::Corrupt {
            position: LogPosition(sequence),
            location: self.location(sequence),
            reason,
        };
        let mut reader = Reader::new(payload);
        let tag = reader.u8("the record tag").map_err(corrupt)?;
        let invocation = InvocationId(reader.u64("the invocation").map_err(corrupt)?);
        match tag {
            TAG_INLINE => Ok(RecHead { invocation, chunks: Vec::new() }),
            TAG_CHUNKED => {
                let n = reader.u32("the chunk count").map_err(corrupt)?;
                let mut chunks = Vec::with_capacity(n.min(1 << 16) as usize);
                for _ in 0..n {
                    chunks.push(reader.u64("a chunk sequence").map_err(corrupt)?);
                }
                Ok(RecHead { invocation, chunks })
            }
            other => Err(corrupt(format!("unknown record tag {other}"))),
        }
    }

    /// The record in a `….rec` message, fetching its chunks if it has any.
    async fn decode(&self, sequence: u64, payload: &[u8]) -> Result<TriggerRecord, LogError> {
        let head = self.parse_head(sequence, payload)?;
        let corrupt = |reason: String| LogError::Corrupt {
            position: LogPosition(sequence),
            location: self.location(sequence),
            reason,
        };
        let record = if head.chunks.is_empty() {
            codec::decode_record(&mut Reader::new(&payload[1..])).map_err(corrupt)?
        } else {
            let mut bytes = Vec::new();
            for &chunk in &head.chunks {
                let message = self.stream.get_raw_message(chunk).await.map_err(|e| {
                    if e.kind() == stream::RawMessageErrorKind::NoMessageFound {
                        corrupt(format!("its chunk at sequence {chunk} is missing"))
                    } else {
                        self.fail(format!("reading chunk {chunk} of {}", self.location(sequence)), e)
                    }
                })?;
                bytes.extend_from_slice(&message.payload);
            }
            codec::decode_record(&mut Reader::new(&bytes)).map_err(corrupt)?
        };
        if record.invocation != head.invocation {
            return Err(corrupt(format!("the chunks hold {}, the head names {}", record.invocation, head.invocation)));
        }
        Ok(record)
    }

    /// The logical start: the newest truncation marker's point.
    async fn start(&self) -> Result<u64, LogError> {
        match self.stream.get_last_raw_message_by_subject(&self.trunc).await {
            Ok(message) => {
                let mut reader = Reader::new(&message.payload);
                reader.u64("the truncation point").map_err(|reason| LogError::Corrupt {
                    position: LogPosition(message.sequence),
                    location: self.location(message.sequence),
                    reason,
                })
            }
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(0),
            Err(e) => Err(self.fail(format!("reading the truncation point of {}", self.config.stream), e)),
        }
    }

    async fn last_sequence(&self) -> Result<u64, LogError> {
        let info = self
            .stream
            .get_info()
            .await
            .map_err(|e| self.fail(format!("reading the state of the stream {}", self.config.stream), e))?;
        Ok(info.state.last_sequence)
    }

    /// A consumer of the stream from `start` (on `filter`, or everything),
    /// that needs no acknowledgements and expires on its own.
    async fn reader(&self, start: u64, filter: Option<&str>) -> Result<consumer::PullConsumer, LogError> {
        self.stream
            .create_consumer(consumer::pull::Config {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: start.max(1) },
                ack_policy: consumer::AckPolicy::None,
                filter_subject: filter.unwrap_or_default().to_string(),
                inactive_threshold: Duration::from_secs(60),
                memory_storage: true,
                ..Default::default()
            })
            .await
            .map_err(|e| self.fail(format!("creating a reader on the stream {}", self.config.stream), e))
    }

    fn drop_reader(self: &Arc<Self>, consumer: &consumer::PullConsumer) {
        let name = consumer.cached_info().name.clone();
        let inner = self.clone();
        tokio::spawn(async move {
            let _ = inner.stream.delete_consumer(&name).await;
        });
    }

    /// Reads messages from `consumer` until `visit` says stop (returns
    /// false) or the stream has no more; returns whether it ran out.
    async fn scan(
        &self,
        consumer: &consumer::PullConsumer,
        batch: usize,
        mut visit: impl FnMut(u64, &async_nats::Message) -> bool,
    ) -> Result<bool, LogError> {
        loop {
            let mut messages = consumer
                .fetch()
                .max_messages(batch.max(1))
                .messages()
                .await
                .map_err(|e| self.fail(format!("reading the stream {}", self.config.stream), e))?;
            let mut got = 0;
            while let Some(message) = messages.next().await {
                let message =
                    message.map_err(|e| self.fail(format!("reading the stream {}", self.config.stream), e))?;
                got += 1;
                let (sequence, pending) = match message.info() {
                    Ok(info) => (info.stream_sequence, info.pending),
                    Err(e) => return Err(self.fail("reading a message's sequence", e)),
                };
                if !visit(sequence, &message.message) {
                    return Ok(false);
                }
                if pending == 0 {
                    return Ok(true);
                }
            }
            if got == 0 {
                return Ok(true);
            }
        }
    }

    async fn read_from(self: Arc<Self>, from: u64, max: usize) -> Result<ReadBatch, LogError> {
        if max == 0 {
            return Ok(ReadBatch { records: Vec::new(), next: LogPosition(from) });
        }
        let last = self.last_sequence().await?;
        let start = self.start().await?;
        let first = from.max(start).max(1);
        if first > last {
            return Ok(ReadBatch { records: Vec::new(), next: LogPosition(from.max(last + 1)) });
        }
        let consumer = self.reader(first, Some(&self.rec)).await?;
        let mut heads = Vec::new();
        let result = self
            .scan(&consumer, max.min(256), |sequence, message| {
                if sequence >= start {
                    heads.push((sequence, message.payload.clone()));
                }
                heads.len() < max
            })
            .await;
        self.drop_reader(&consumer);
        result?;
        let mut records = Vec::with_capacity(heads.len());
        for (sequence, payload) in heads {
            records.push((LogPosition(sequence), self.decode(sequence, &payload).await?));
        }
        let next = match records.last() {
            Some((p, _)) if records.len() == max => LogPosition(p.0 + 1),
            Some((p, _)) => LogPosition(from.max(last + 1).max(p.0 + 1)),
            None => LogPosition(from.max(last + 1)),
        };
        Ok(ReadBatch { records, next })
    }

    /// Replays what was published since the index was last brought up to
    /// date; returns the stream's last sequence.
    async fn catch_up(&self, index: &mut Index) -> Result<u64, LogError> {
        let last = self.last_sequence().await?;
        if index.upto > last {
            return Ok(last);
        }
        let consumer = self.reader(index.upto, None).await?;
        let mut error = None;
        let mut seen = index.upto;
        let result = self
            .scan(&consumer, 512, |sequence, message| {
                seen = seen.max(sequence + 1);
                if let Err(e) = self.apply(index, sequence, message) {
                    error = Some(e);
                    return false;
                }
                true
            })
            .await;
        let name = consumer.cached_info().name.clone();
        let _ = self.stream.delete_consumer(&name).await;
        result?;
        if let Some(e) = error {
            return Err(e);
        }
        index.upto = seen.max(last + 1);
        Ok(last)
    }

    fn apply(&self, index: &mut Index, sequence: u64, message: &async_nats::Message) -> Result<(), LogError> {
        let subject = message.subject.as_str();
        let u64_payload = |what: &str| {
            Reader::new(&message.payload).u64(what).map_err(|reason| LogError::Corrupt {
                position: LogPosition(sequence),
                location: self.location(sequence),
                reason,
            })
        };
        if subject == self.rec {
            let head = self.parse_head(sequence, &message.payload)?;
            if let Some(&lowest) = head.chunks.iter().min() {
                index.chunked.insert(sequence, lowest);
            }
            index.pending.record(sequence, head.invocation, head.chunks);
        } else if subject == self.done {
            index.pending.complete(InvocationId(u64_payload("the invocation")?));
        } else if subject == self.trunc {
            let before = u64_payload("the truncation point")?;
            index.pending.truncate(before);
            index.chunked = index.chunked.split_off(&before);
        }
        Ok(())
    }

    async fn records(self: Arc<Self>, invocation: InvocationId) -> Result<Vec<(LogPosition, TriggerRecord)>, LogError> {
        let locs: Vec<u64> = {
            let mut index = self.index.lock().await;
            self.catch_up(&mut index).await?;
            index.pending.records(invocation).iter().map(|(seq, _)| *seq).collect()
        };
        let mut out = Vec::with_capacity(locs.len());
        for sequence in locs {
            let message = self.stream.get_raw_message(sequence).await.map_err(|e| {
                if e.kind() == stream::RawMessageErrorKind::NoMessageFound {
                    LogError::Corrupt {
                        position: LogPosition(sequence),
                        location: self.location(sequence),
                        reason: "the record's message is missing".into(),
                    }
                } else {
                    self.fail(format!("reading {}", self.location(sequence)), e)
                }
            })?;
            out.push((LogPosition(sequence), self.decode(sequence, &message.payload).await?));
        }
        Ok(out)
    }

    async fn pending(self: Arc<Self>) -> Result<Vec<InvocationId>, LogError> {
        let mut index = self.index.lock().await;
        self.catch_up(&mut index).await?;
        Ok(index.pending.pending())
    }

    async fn truncate(self: Arc<Self>, before: u64) -> Result<u64, LogError> {
        let mut index = self.index.lock().await;
        let last = self.catch_up(&mut index).await?;
        let before = before.min(last + 1);
        if before <= index.pending.start() {
            return Ok(index.pending.start());
        }
        // The marker makes the truncation durable and visible; the purges
        // reclaim space (records first: a completion must not go before
        // the records it completes).
        let marker = self.publish(&self.trunc, before.to_le_bytes().to_vec()).await?;
        for (subject, below) in [(&self.rec, before), (&self.done, before), (&self.trunc, marker)] {
            self.stream
                .purge()
                .filter(subject.as_str())
                .sequence(below)
                .await
                .map_err(|e| self.fail(format!("purging {subject} before {below}"), e))?;
        }
        index.pending.truncate(before);
        index.chunked = index.chunked.split_off(&before);
        self.reclaim_chunks(&index, marker + 1).await?;
        Ok(before)
    }

    /// Purges the chunks below both the lowest chunk of any remaining record
    /// and the stream's end as of `chunk_grace` ago.
    async fn reclaim_chunks(&self, index: &Index, next: u64) -> Result<(), LogError> {
        let Some(settled) = self.note(next) else { return Ok(()) };
        let referenced = index.chunked.values().copied().min().unwrap_or(u64::MAX);
        let below = settled.min(referenced);
        if below > 1 {
            self.stream
                .purge()
                .filter(self.chunk.as_str())
                .sequence(below)
                .await
                .map_err(|e| self.fail(format!("purging {} before {below}", self.chunk), e))?;
        }
        Ok(())
    }

    async fn truncate_completed(self: Arc<Self>) -> Result<LogPosition, LogError> {
        let floor = {
            let mut index = self.index.lock().await;
            let last = self.catch_up(&mut index).await?;
            index.pending.floor().unwrap_or(last + 1)
        };
        let start = self.truncate(floor).await?;
        Ok(LogPosition(start.max(floor)))
    }
}

impl TriggerLog for JetStreamTriggerLog {
    fn append(&self, record: &TriggerRecord) -> Result<LogPosition, LogError> {
        codec::encoded_len(record)?;
        let record = record.clone();
        self.run(|inner| inner.append(record))
    }

    fn read_from(&self, from: LogPosition, max: usize) -> Result<ReadBatch, LogError> {
        self.run_long(|inner| inner.read_from(from.0, max))
    }

    fn records(&self, invocation: InvocationId) -> Result<Vec<(LogPosition, TriggerRecord)>, LogError> {
        self.run_long(|inner| inner.records(invocation))
    }

    fn complete(&self, invocation: InvocationId) -> Result<(), LogError> {
        self.run(|inner| async move { inner.publish(&inner.done, invocation.0.to_le_bytes().to_vec()).await.map(drop) })
    }

    fn pending(&self) -> Result<Vec<InvocationId>, LogError> {
        self.run_long(|inner| inner.pending())
    }

    fn truncate(&self, before: LogPosition) -> Result<(), LogError> {
        self.run_long(|inner| async move { inner.truncate(before.0).await.map(drop) })
    }

    fn truncate_completed(&self) -> Result<LogPosition, LogError> {
        self.run_long(|inner| inner.truncate_completed())
    }
}
