//! Owned libibverbs objects: a device context, protection domains,
//! registered memory, completion queues and RC queue pairs, each released
//! in the right order when dropped.
//!
//! This is the only module of the verbs backend with `unsafe` code. Its
//! safe interface keeps one invariant the hardware cannot: memory the NIC
//! may still access is never released or reused. A queue pair is destroyed
//! before the memory it posted from (field order and `Arc`s), and
//! [`SendGuard::run`] returns only when every work request it posted has
//! completed or been flushed — or, if the device never reports them, after
//! leaking the staging buffer so that a late DMA cannot hit freed memory.
// The FFI calls below need `unsafe`; each block says why it is sound.
#![allow(unsafe_code)]

use super::messages::QueuePairInfo;
use super::raw::*;
use super::{VerbsConfig, VerbsError};
use memmap2::MmapMut;
use parking_lot::{Mutex, MutexGuard};
use std::ffi::CStr;
use std::io;
use std::os::raw::{c_int, c_uint};
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long [`SendGuard::run`] waits for flushed completions after it moved
/// a queue pair to the error state.
const FLUSH_GRACE: Duration = Duration::from_secs(5);
/// Completions fetched per poll.
const POLL_BATCH: usize = 32;

fn verb_error(verb: &'static str, device: &str, source: io::Error) -> VerbsError {
    VerbsError::Verb { verb, device: device.to_owned(), source }
}

fn errno_error(verb: &'static str, device: &str, errno: c_int) -> VerbsError {
    // Verbs return either a positive errno or -1 with `errno` set.
    let source = if errno > 0 { io::Error::from_raw_os_error(errno) } else { io::Error::last_os_error() };
    verb_error(verb, device, source)
}

/// The text libibverbs gives for a work-completion status.
pub(super) fn status_text(status: u32) -> String {
    // SAFETY: `ibv_wc_status_str` accepts any value and returns a pointer to
    // a static NUL-terminated string (or NULL, checked).
    let text = unsafe { ibv_wc_status_str(status) };
    if text.is_null() {
        return format!("work completion status {status}");
    }
    // SAFETY: non-NULL, static and NUL-terminated (see above).
    unsafe { CStr::from_ptr(text) }.to_string_lossy().into_owned()
}

/// The device list of libibverbs, freed on drop.
struct DeviceList {
    list: NonNull<*mut ibv_device>,
    len: usize,
}

impl DeviceList {
    fn get() -> Result<DeviceList, VerbsError> {
        let mut n: c_int = 0;
        // SAFETY: `n` is a valid out-pointer; the call returns NULL or an
        // array of `n` device pointers that stays valid until freed.
        let list = unsafe { ibv_get_device_list(&mut n) };
        let list = NonNull::new(list)
            .ok_or_else(|| VerbsError::NoDevice { reason: io::Error::last_os_error().to_string() })?;
        Ok(DeviceList { list, len: usize::try_from(n).unwrap_or(0) })
    }

    fn device(&self, i: usize) -> *mut ibv_device {
        debug_assert!(i < self.len);
        // SAFETY: `i < len`, and the array holds `len` entries while `self` lives.
        unsafe { *self.list.as_ptr().add(i) }
    }

    fn name(&self, i: usize) -> String {
        // SAFETY: a device of the live list.
        let name = unsafe { ibv_get_device_name(self.device(i)) };
        if name.is_null() {
            return format!("device #{i}");
        }
        // SAFETY: non-NULL names are NUL-terminated and live with the list.
        unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned()
    }
}

impl Drop for DeviceList {
    fn drop(&mut self) {
        // SAFETY: the list came from `ibv_get_device_list` and is freed once.
        // Contexts opened from it stay valid (ibv_free_device_list(3)).
        unsafe { ibv_free_device_list(self.list.as_ptr()) };
    }
}

/// The names of the machine's RDMA devices.
pub(super) fn device_names() -> Result<Vec<String>, VerbsError> {
    let list = DeviceList::get()?;
    Ok((0..list.len).map(|i| list.name(i)).collect())
}

/// Local write, plus remote READ and WRITE if `remote`.
fn access_flags(remote: bool) -> ibv_access_flags {
    let local = ibv_access_flags::IBV_ACCESS_LOCAL_WRITE;
    if remote {
        local | ibv_access_flags::IBV_ACCESS_REMOTE_READ | ibv_access_flags::IBV_ACCESS_REMOTE_WRITE
    } else {
        local
    }
}

/// A GID table entry: the GID and its `ibv_gid_type`.
struct GidEntry {
    gid: [u8; 16],
    gid_type: u32,
}

/// An open device context and what the backend needs to know of its port.
pub(super) struct Context {
    raw: NonNull<ibv_context>,
    pub(super) name: String,
    pub(super) port: u8,
    pub(super) lid: u16,
    /// The GID table index and GID this side routes with, if any.
    pub(super) gid: Option<(u8, [u8; 16])>,
    pub(super) mtu: u8,
    pub(super) max_msg_bytes: u64,
    pub(super) max_qp_wr: u32,
    pub(super) initiator_depth: u8,
    pub(super) responder_resources: u8,
}

// SAFETY: a libibverbs context may be used from any thread: the library
// serializes what needs serializing (ibv_open_device(3), "thread safety").
unsafe impl Send for Context {}
// SAFETY: as above; `Context` has no interior state of its own.
unsafe impl Sync for Context {}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("device", &self.name).field("port", &self.port).finish_non_exhaustive()
    }
}

impl Context {
    /// Opens the configured device (or the first one whose port is active).
    pub(super) fn open(config: &VerbsConfig) -> Result<Arc<Context>, VerbsError> {
        let list = DeviceList::get()?;
        if list.len == 0 {
            return Err(VerbsError::NoDevice { reason: "the device list is empty".into() });
        }
        let names: Vec<String> = (0..list.len).map(|i| list.name(i)).collect();
        let candidates: Vec<usize> = match &config.device {
            Some(wanted) => match names.iter().position(|n| n == wanted) {
                Some(i) => vec![i],
                None => return Err(VerbsError::DeviceNotFound { name: wanted.clone(), available: names }),
            },
            None => (0..list.len).collect(),
        };
        let mut first_error = None;
        for i in candidates {
            match Context::open_one(&list, i, &names[i], config) {
                Ok(context) => return Ok(Arc::new(context)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| VerbsError::NoDevice { reason: "no device could be opened".into() }))
    }

    fn open_one(list: &DeviceList, i: usize, name: &str, config: &VerbsConfig) -> Result<Context, VerbsError> {
        // SAFETY: a device of the live list.
        let raw = unsafe { ibv_open_device(list.device(i)) };
        let raw = NonNull::new(raw).ok_or_else(|| verb_error("ibv_open_device", name, io::Error::last_os_error()))?;
        // From here on `context` closes the device if anything fails.
        let mut context = Context {
            raw,
            name: name.to_owned(),
            port: config.port,
            lid: 0,
            gid: None,
            mtu: 1,
            max_msg_bytes: 0,
            max_qp_wr: 0,
            initiator_depth: 1,
            responder_resources: 1,
        };

        let mut device = ibv_device_attr::default();
        // SAFETY: an open context and a writable `ibv_device_attr` (the
        // bindgen-generated layout of `ibverbs-sys`).
        let rc = unsafe { ibv_query_device(raw.as_ptr(), &mut device) };
        if rc != 0 {
            return Err(errno_error("ibv_query_device", name, rc));
        }

        let mut port = ibv_port_attr::default();
        // SAFETY: an open context and a writable, zeroed `ibv_port_attr`. The
        // exported symbol takes the older `_compat_ibv_port_attr`, a 48-byte
        // prefix of `ibv_port_attr` that holds every field read below
        // (asserted in `raw`), and writes only that prefix.
        let rc = unsafe { ibv_query_port(raw.as_ptr(), config.port, (&raw mut port).cast()) };
        if rc != 0 {
            return Err(errno_error("ibv_query_port", name, rc));
        }
        if port.state != ibv_port_state::IBV_PORT_ACTIVE {
            return Err(VerbsError::PortNotActive { device: name.to_owned(), port: config.port, state: port.state });
        }

        context.lid = port.lid;
        context.mtu = u8::try_from(port.active_mtu.clamp(1, 5)).unwrap_or(1);
        context.max_msg_bytes = u64::from(port.max_msg_sz);
        context.max_qp_wr = u32::try_from(device.max_qp_wr).unwrap_or(0);
        context.initiator_depth = u8::try_from(device.max_qp_init_rd_atom.clamp(1, 16)).unwrap_or(1);
        context.responder_resources = u8::try_from(device.max_qp_rd_atom.clamp(1, 16)).unwrap_or(1);
        let ethernet = u32::from(port.link_layer) == IBV_LINK_LAYER_ETHERNET;
        context.gid = match config.gid_index {
            Some(index) => Some((index, context.query_gid(index)?.gid)),
            None if ethernet => Some(context.best_gid(port.gid_tbl_len)?),
            None => None,
        };
        Ok(context)
    }

    fn query_gid(&self, index: u8) -> Result<GidEntry, VerbsError> {
        let mut entry = ibv_gid_entry::default();
        // SAFETY: an open context and a writable `ibv_gid_entry` whose size we pass.
        let rc = unsafe {
            _ibv_query_gid_ex(
                self.raw.as_ptr(),
                u32::from(self.port),
                u32::from(index),
                &mut entry,
                0,
                std::mem::size_of::<ibv_gid_entry>(),
            )
        };
        if rc != 0 {
            return Err(errno_error("ibv_query_gid_ex", &self.name, rc));
        }
        // SAFETY: both members of `union ibv_gid` are plain bytes or
        // integers of the same 16 bytes, so any value is a valid `raw`.
        let gid = unsafe { entry.gid.raw };
        Ok(GidEntry { gid, gid_type: entry.gid_type })
    }

    /// The GID to route with on RoCE: RoCE v2 with an IPv4-mapped address
    /// first, then any RoCE v2 GID, then any other non-zero GID.
    fn best_gid(&self, table_len: c_int) -> Result<(u8, [u8; 16]), VerbsError> {
        let mut best: Option<(u8, u8, [u8; 16])> = None;
        for index in 0..table_len.clamp(0, 256) {
            let Ok(index) = u8::try_from(index) else { break };
            let Ok(entry) = self.query_gid(index) else { continue };
            let raw = entry.gid;
            if raw == [0; 16] {
                continue;
            }
            let v2 = entry.gid_type == IBV_GID_TYPE_ROCE_V2;
            let ipv4 = raw[..10] == [0; 10] && raw[10..12] == [0xff, 0xff];
            let score = match (v2, ipv4) {
                (true, true) => 3,
                (true, false) => 2,
                _ => 1,
            };
            if best.is_none_or(|(s, _, _)| score > s) {
                best = Some((score, index, raw));
            }
        }
        best.map(|(_, index, raw)| (index, raw)).ok_or_else(|| {
            VerbsError::Config(format!(
                "port {} of {} is an Ethernet (RoCE) port with no usable GID; set VerbsConfig::gid_index",
                self.port, self.name
            ))
        })
    }

    fn raw(&self) -> *mut ibv_context {
        self.raw.as_ptr()
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: opened by `ibv_open_device`, closed once; every object made
        // from it holds an `Arc<Context>`, so none outlives this call.
        unsafe { ibv_close_device(self.raw.as_ptr()) };
    }
}

/// A protection domain.
pub(super) struct Pd {
    raw: NonNull<ibv_pd>,
    context: Arc<Context>,
}

// SAFETY: protection domains are thread-safe library objects; `Pd` only
// hands its pointer to the library.
unsafe impl Send for Pd {}
// SAFETY: as above.
unsafe impl Sync for Pd {}

impl Pd {
    pub(super) fn new(context: &Arc<Context>) -> Result<Arc<Pd>, VerbsError> {
        // SAFETY: an open context.
        let raw = unsafe { ibv_alloc_pd(context.raw()) };
        let raw =
            NonNull::new(raw).ok_or_else(|| verb_error("ibv_alloc_pd", &context.name, io::Error::last_os_error()))?;
        Ok(Arc::new(Pd { raw, context: context.clone() }))
    }
}

impl Drop for Pd {
    fn drop(&mut self) {
        // SAFETY: allocated by `ibv_alloc_pd`, freed once; queue pairs and
        // memory registrations in it hold an `Arc<Pd>` and are gone by now.
        unsafe { ibv_dealloc_pd(self.raw.as_ptr()) };
    }
}

/// Zero-filled memory registered with a protection domain.
pub(super) struct Registered {
    mr: NonNull<ibv_mr>,
    base: NonNull<u8>,
    len: usize,
    /// Owns the mapping `base` points into; unmapped after deregistration.
    _map: MmapMut,
    _pd: Arc<Pd>,
}

// SAFETY: the mapping is owned; the registration is a thread-safe library
// object. Writes need `&mut self`; reads through `&self` read memory only
// the NIC writes, at times the owner of this buffer controls.
unsafe impl Send for Registered {}
// SAFETY: as above.
unsafe impl Sync for Registered {}

impl Registered {
    /// Maps `len` zeroed bytes and registers them; `remote` allows remote
    /// READ and WRITE through the registration's rkey.
    pub(super) fn new(pd: &Arc<Pd>, len: usize, remote: bool) -> Result<Registered, VerbsError> {
        let name = &pd.context.name;
        let mut map = MmapMut::map_anon(len.max(1)).map_err(|e| verb_error("mmap", name, e))?;
        let base = NonNull::new(map.as_mut_ptr())
            .ok_or_else(|| verb_error("mmap", name, io::Error::other("mapping at address 0")))?;
        let access = access_flags(remote);
        // SAFETY: `base..base + len` is a live mapping owned by the returned
        // value, which deregisters before unmapping; `pd` is live.
        let mr = unsafe { ibv_reg_mr(pd.raw.as_ptr(), base.as_ptr().cast(), len.max(1), access.0 as c_int) };
        let mr = NonNull::new(mr).ok_or_else(|| verb_error("ibv_reg_mr", name, io::Error::last_os_error()))?;
        Ok(Registered { mr, base, len, _map: map, _pd: pd.clone() })
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn addr(&self) -> u64 {
        self.base.as_ptr() as u64
    }

    pub(super) fn lkey(&self) -> u32 {
        // SAFETY: `mr` is a live registration; its keys never change.
        unsafe { self.mr.as_ref() }.lkey
    }

    pub(super) fn rkey(&self) -> u32 {
        // SAFETY: as in `lkey`.
        unsafe { self.mr.as_ref() }.rkey
    }

    fn range_ok(&self, offset: usize, len: usize) -> bool {
        offset.checked_add(len).is_some_and(|end| end <= self.len)
    }

    /// Copies `data` to `offset`; false (and no copy) if it does not fit.
    pub(super) fn write(&mut self, offset: usize, data: &[u8]) -> bool {
        if !self.range_ok(offset, data.len()) {
            return false;
        }
        // SAFETY: in bounds (checked); `&mut self` excludes other Rust
        // accesses, and callers write only where no posted work request
        // points (the NIC reads staging only while `run` waits).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.base.as_ptr().add(offset), data.len()) };
        true
    }

    /// Copies `buf.len()` bytes from `offset`; false (and no copy) if out of bounds.
    pub(super) fn read(&self, offset: usize, buf: &mut [u8]) -> bool {
        if !self.range_ok(offset, buf.len()) {
            return false;
        }
        // SAFETY: in bounds (checked); `buf` is a distinct Rust buffer.
        // Callers read only ranges whose work requests have completed.
        unsafe { std::ptr::copy_nonoverlapping(self.base.as_ptr().add(offset), buf.as_mut_ptr(), buf.len()) };
        true
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        // SAFETY: registered by `ibv_reg_mr`, deregistered once, before the
        // mapping (a field) is unmapped. Queue pairs that posted from it are
        // destroyed first by their owners.
        unsafe { ibv_dereg_mr(self.mr.as_ptr()) };
    }
}

/// A completion queue.
pub(super) struct Cq {
    raw: NonNull<ibv_cq>,
    poll_fn: PollCqFn,
    _context: Arc<Context>,
}

// SAFETY: libibverbs completion queues may be polled from any thread (the
// provider locks them); `Cq` holds no other state.
unsafe impl Send for Cq {}
// SAFETY: as above.
unsafe impl Sync for Cq {}

impl Cq {
    pub(super) fn new(context: &Arc<Context>, entries: u32) -> Result<Arc<Cq>, VerbsError> {
        // SAFETY: an open context; the ops table is filled by the provider
        // when the context opens and is not changed afterwards.
        let poll_fn = unsafe { (*context.raw()).ops.poll_cq }.ok_or_else(|| {
            verb_error("ibv_poll_cq", &context.name, io::Error::new(io::ErrorKind::Unsupported, "no poll_cq"))
        })?;
        let entries = c_int::try_from(entries.max(1)).unwrap_or(c_int::MAX);
        // SAFETY: an open context; no completion channel, vector 0.
        let raw = unsafe { ibv_create_cq(context.raw(), entries, std::ptr::null_mut(), std::ptr::null_mut(), 0) };
        let raw =
            NonNull::new(raw).ok_or_else(|| verb_error("ibv_create_cq", &context.name, io::Error::last_os_error()))?;
        Ok(Arc::new(Cq { raw, poll_fn, _context: context.clone() }))
    }

    /// Fetches up to `wcs.len()` completions; how many it fetched.
    pub(super) fn poll(&self, wcs: &mut [ibv_wc]) -> io::Result<usize> {
        let n = c_int::try_from(wcs.len()).unwrap_or(c_int::MAX);
        // SAFETY: a live CQ and a writable array of at least `n` entries of
        // the library's `ibv_wc` layout (declared by `ibverbs-sys`, which
        // tests it against `verbs.h`).
        let got = unsafe { (self.poll_fn)(self.raw.as_ptr(), n, wcs.as_mut_ptr()) };
        usize::try_from(got).map(|n| n.min(wcs.len())).map_err(|_| io::Error::other("ibv_poll_cq failed"))
    }
}

impl Drop for Cq {
    fn drop(&mut self) {
        // SAFETY: created by `ibv_create_cq`, destroyed once; queue pairs
        // using it hold an `Arc<Cq>` and are destroyed by now.
        unsafe { ibv_destroy_cq(self.raw.as_ptr()) };
    }
}

/// What a queue pair is created with.
#[derive(Debug, Clone, Copy)]
pub(super) struct QpSpec {
    /// Work requests the send queue holds (and one run may post).
    pub(super) max_send_wr: u32,
    /// Bytes of the registered staging buffer for sends (0: none).
    pub(super) staging_bytes: usize,
    /// Receive buffers posted when the queue pair connects.
    pub(super) recv_slots: u32,
    /// Size of each receive buffer.
    pub(super) recv_slot_bytes: usize,
    /// Whether the peer may READ and WRITE memory of this queue pair's
    /// protection domain (the memory node's end).
    pub(super) remote_access: bool,
}

/// What a posted work request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WorkOp {
    /// RDMA READ from the remote address into staging.
    Read,
    /// RDMA WRITE from staging to the remote address.
    Write,
    /// SEND from staging to the peer's next receive buffer.
    Send,
}

/// One work request of a run: `len` bytes at `local` of the staging buffer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Work {
    pub(super) op: WorkOp,
    pub(super) local: usize,
    pub(super) len: u32,
    pub(super) remote_addr: u64,
    pub(super) rkey: u32,
    /// Wait for earlier RDMA READs of the queue to finish first.
    pub(super) fence: bool,
}

/// Why a run did not complete.
#[derive(Debug)]
pub(super) enum RunFailure {
    /// Work request `index` completed with an error status; those after it
    /// were flushed (RC semantics) or never posted.
    Completion { index: usize, status: u32 },
    /// Posting work request `index` failed; those after it were not posted.
    Post { index: usize, error: io::Error },
    /// The device reported no completion for work request `index` within
    /// the timeout; the queue pair was moved to the error state.
    Stuck { index: usize },
}

/// The send queue's state: staging memory and reused scratch space.
struct SendSide {
    staging: Option<Registered>,
    wrs: Vec<ibv_send_wr>,
    sges: Vec<ibv_sge>,
    wcs: Vec<ibv_wc>,
    statuses: Vec<Option<u32>>,
    /// A run timed out: the queue pair is in the error state.
    broken: bool,
}

// SAFETY: the raw pointers in `wrs` point into `wrs` and `sges` themselves,
// are rebuilt before every post and never dereferenced by Rust code.
unsafe impl Send for SendSide {}

/// An RC queue pair with its completion queues and buffers.
pub(super) struct Qp {
    raw: NonNull<ibv_qp>,
    post_send_fn: PostSendFn,
    post_recv_fn: PostRecvFn,
    qpn: u32,
    psn: u32,
    max_send_wr: u32,
    remote_access: bool,
    send: Mutex<SendSide>,
    recv: Option<Registered>,
    recv_slots: u32,
    recv_slot_bytes: usize,
    send_cq: Arc<Cq>,
    _recv_cq: Arc<Cq>,
    pd: Arc<Pd>,
}

// SAFETY: a libibverbs queue pair may be used from several threads (the
// provider locks its send and receive queues separately); our send-queue
// state is behind a mutex and the receive buffers are only read.
unsafe impl Send for Qp {}
// SAFETY: as above.
unsafe impl Sync for Qp {}

impl Qp {
    /// Creates a queue pair in the RESET state, with a random first PSN.
    pub(super) fn new(
        pd: &Arc<Pd>,
        send_cq: &Arc<Cq>,
        recv_cq: &Arc<Cq>,
        spec: QpSpec,
        psn: u32,
    ) -> Result<Qp, VerbsError> {
        let context = &pd.context;
        let name = &context.name;
        // SAFETY: the ops table of an open context is immutable.
        let (post_send_fn, post_recv_fn) = unsafe { ((*context.raw()).ops.post_send, (*context.raw()).ops.post_recv) };
        let unsupported = |verb| verb_error(verb, name, io::Error::new(io::ErrorKind::Unsupported, "missing verb"));
        let post_send_fn = post_send_fn.ok_or_else(|| unsupported("ibv_post_send"))?;
        let post_recv_fn = post_recv_fn.ok_or_else(|| unsupported("ibv_post_recv"))?;
        let staging = match spec.staging_bytes {
            0 => None,
            n => Some(Registered::new(pd, n, false)?),
        };
        let recv = match spec.recv_slots {
            0 => None,
            n => Some(Registered::new(pd, spec.recv_slot_bytes * n as usize, false)?),
        };
        let mut init = ibv_qp_init_attr {
            qp_context: std::ptr::null_mut(),
            send_cq: send_cq.raw.as_ptr(),
            recv_cq: recv_cq.raw.as_ptr(),
            srq: std::ptr::null_mut(),
            cap: ibv_qp_cap {
                max_send_wr: spec.max_send_wr.max(1),
                max_recv_wr: spec.recv_slots.max(1),
                max_send_sge: 1,
                max_recv_sge: 1,
                max_inline_data: 0,
            },
            qp_type: ibv_qp_type::IBV_QPT_RC,
            sq_sig_all: 0,
        };
        // SAFETY: a live PD and CQs of the same context; `init` is a valid
        // `ibv_qp_init_attr` the call may update (actual capacities).
        let raw = unsafe { ibv_create_qp(pd.raw.as_ptr(), &mut init) };
        let raw = NonNull::new(raw).ok_or_else(|| verb_error("ibv_create_qp", name, io::Error::last_os_error()))?;
        // SAFETY: a queue pair just created; `qp_num` is set at creation.
        let qpn = unsafe { raw.as_ref() }.qp_num;
        let window = spec.max_send_wr.max(1) as usize;
        Ok(Qp {
            raw,
            post_send_fn,
            post_recv_fn,
            qpn,
            psn: psn & 0x00ff_ffff,
            max_send_wr: spec.max_send_wr.max(1),
            remote_access: spec.remote_access,
            send: Mutex::new(SendSide {
                staging,
                wrs: Vec::with_capacity(window),
                sges: Vec::with_capacity(window),
                wcs: vec![ibv_wc::default(); POLL_BATCH],
                statuses: Vec::with_capacity(window),
                broken: false,
            }),
            recv,
            recv_slots: spec.recv_slots,
            recv_slot_bytes: spec.recv_slot_bytes,
            send_cq: send_cq.clone(),
            _recv_cq: recv_cq.clone(),
            pd: pd.clone(),
        })
    }

    pub(super) fn max_send_wr(&self) -> u32 {
        self.max_send_wr
    }

    /// This end, as the other end needs it.
    pub(super) fn info(&self) -> QueuePairInfo {
        let context = &self.pd.context;
        QueuePairInfo {
            lid: context.lid,
            gid: context.gid.map(|(_, gid)| gid),
            qpn: self.qpn,
            psn: self.psn,
            mtu: context.mtu,
            initiator_depth: context.initiator_depth,
            responder_resources: context.responder_resources,
            recv_slot_bytes: if self.recv_slots > 0 { u32::try_from(self.recv_slot_bytes).unwrap_or(0) } else { 0 },
        }
    }

    fn modify(&self, attr: &mut ibv_qp_attr, mask: ibv_qp_attr_mask, what: &'static str) -> Result<(), VerbsError> {
        // SAFETY: a live queue pair and a valid `ibv_qp_attr`; the library
        // reads only the fields `mask` names.
        let rc = unsafe { ibv_modify_qp(self.raw.as_ptr(), attr, mask.0 as c_int) };
        if rc != 0 {
            return Err(errno_error(what, &self.pd.context.name, rc));
        }
        Ok(())
    }

    /// Connects to `remote`: INIT, post every receive buffer, RTR, RTS.
    pub(super) fn connect(&self, remote: &QueuePairInfo, config: &VerbsConfig) -> Result<(), VerbsError> {
        let context = &self.pd.context;
        let mut attr = ibv_qp_attr {
            qp_state: ibv_qp_state::IBV_QPS_INIT,
            pkey_index: 0,
            port_num: context.port,
            ..Default::default()
        };
        attr.qp_access_flags = access_flags(self.remote_access).0;
        self.modify(
            &mut attr,
            ibv_qp_attr_mask::IBV_QP_STATE
                | ibv_qp_attr_mask::IBV_QP_PKEY_INDEX
                | ibv_qp_attr_mask::IBV_QP_PORT
                | ibv_qp_attr_mask::IBV_QP_ACCESS_FLAGS,
            "ibv_modify_qp(INIT)",
        )?;

        for slot in 0..self.recv_slots {
            self.post_recv(slot)?;
        }

        let mut attr = ibv_qp_attr {
            qp_state: ibv_qp_state::IBV_QPS_RTR,
            path_mtu: c_uint::from(context.mtu.min(remote.mtu).max(1)),
            dest_qp_num: remote.qpn,
            rq_psn: remote.psn & 0x00ff_ffff,
            max_dest_rd_atomic: context.responder_resources.max(1),
            min_rnr_timer: config.min_rnr_timer,
            ..Default::default()
        };
        attr.ah_attr.dlid = remote.lid;
        attr.ah_attr.port_num = context.port;
        match (remote.gid, context.gid) {
            (Some(dgid), Some((sgid_index, _))) => {
                attr.ah_attr.is_global = 1;
                attr.ah_attr.grh.dgid = ibv_gid { raw: dgid };
                attr.ah_attr.grh.sgid_index = sgid_index;
                attr.ah_attr.grh.hop_limit = 64;
            }
            (None, None) => {}
            (Some(_), None) | (None, Some(_)) => {
                return Err(VerbsError::Config(
                    "one end routes by GID and the other does not; set gid_index on both or neither".into(),
                ));
            }
        }
        self.modify(
            &mut attr,
            ibv_qp_attr_mask::IBV_QP_STATE
                | ibv_qp_attr_mask::IBV_QP_AV
                | ibv_qp_attr_mask::IBV_QP_PATH_MTU
                | ibv_qp_attr_mask::IBV_QP_DEST_QPN
                | ibv_qp_attr_mask::IBV_QP_RQ_PSN
                | ibv_qp_attr_mask::IBV_QP_MAX_DEST_RD_ATOMIC
                | ibv_qp_attr_mask::IBV_QP_MIN_RNR_TIMER,
            "ibv_modify_qp(RTR)",
        )?;

        let mut attr = ibv_qp_attr {
            qp_state: ibv_qp_state::IBV_QPS_RTS,
            sq_psn: self.psn,
            timeout: config.ack_timeout,
            retry_cnt: config.retry_count.min(7),
            rnr_retry: 7,
            max_rd_atomic: context.initiator_depth.min(remote.responder_resources).max(1),
            ..Default::default()
        };
        self.modify(
            &mut attr,
            ibv_qp_attr_mask::IBV_QP_STATE
                | ibv_qp_attr_mask::IBV_QP_TIMEOUT
                | ibv_qp_attr_mask::IBV_QP_RETRY_CNT
                | ibv_qp_attr_mask::IBV_QP_RNR_RETRY
                | ibv_qp_attr_mask::IBV_QP_SQ_PSN
                | ibv_qp_attr_mask::IBV_QP_MAX_QP_RD_ATOMIC,
            "ibv_modify_qp(RTS)",
        )
    }

    /// Moves the queue pair to the error state: outstanding work requests
    /// are flushed and nothing more is executed.
    pub(super) fn set_error(&self) {
        let mut attr = ibv_qp_attr { qp_state: ibv_qp_state::IBV_QPS_ERR, ..Default::default() };
        let _ = self.modify(&mut attr, ibv_qp_attr_mask::IBV_QP_STATE, "ibv_modify_qp(ERR)");
    }

    /// Posts receive buffer `slot`.
    pub(super) fn post_recv(&self, slot: u32) -> Result<(), VerbsError> {
        let name = &self.pd.context.name;
        let Some(pool) = self.recv.as_ref().filter(|_| slot < self.recv_slots) else {
            return Err(verb_error("ibv_post_recv", name, io::Error::new(io::ErrorKind::InvalidInput, "no such slot")));
        };
        let mut sge = ibv_sge {
            addr: pool.addr() + (slot as usize * self.recv_slot_bytes) as u64,
            length: u32::try_from(self.recv_slot_bytes).unwrap_or(u32::MAX),
            lkey: pool.lkey(),
        };
        let mut wr = ibv_recv_wr { wr_id: u64::from(slot), next: std::ptr::null_mut(), sg_list: &mut sge, num_sge: 1 };
        let mut bad = std::ptr::null_mut();
        // SAFETY: a live queue pair; `wr` and `sge` live through the call
        // (the provider copies them); the buffer is a slot of `self.recv`,
        // which outlives the queue pair (destroyed first in `drop`), and the
        // slot is not read until its completion arrives.
        let rc = unsafe { (self.post_recv_fn)(self.raw.as_ptr(), &mut wr, &mut bad) };
        if rc != 0 {
            return Err(errno_error("ibv_post_recv", name, rc));
        }
        Ok(())
    }

    /// Copies the first `len` bytes of receive buffer `slot` (whose
    /// completion arrived) into `out`.
    pub(super) fn read_slot(&self, slot: u32, len: usize, out: &mut Vec<u8>) -> bool {
        let Some(pool) = self.recv.as_ref().filter(|_| slot < self.recv_slots && len <= self.recv_slot_bytes) else {
            return false;
        };
        out.resize(len, 0);
        pool.read(slot as usize * self.recv_slot_bytes, out)
    }

    /// Exclusive use of the send queue.
    pub(super) fn send_side(&self) -> SendGuard<'_> {
        SendGuard { qp: self, side: self.send.lock() }
    }
}

impl Drop for Qp {
    fn drop(&mut self) {
        // SAFETY: created by `ibv_create_qp` and destroyed once, before the
        // buffers, CQs and PD it uses (fields, dropped after this body).
        // Destroying it stops every access of the NIC on its behalf.
        unsafe { ibv_destroy_qp(self.raw.as_ptr()) };
    }
}

/// The send queue of a queue pair, locked.
pub(super) struct SendGuard<'a> {
    qp: &'a Qp,
    side: MutexGuard<'a, SendSide>,
}

impl SendGuard<'_> {
    /// Bytes of staging memory (0 when the staging buffer was leaked).
    pub(super) fn staging_len(&self) -> usize {
        self.side.staging.as_ref().map_or(0, Registered::len)
    }

    /// Copies `data` into staging at `offset`.
    pub(super) fn stage(&mut self, offset: usize, data: &[u8]) -> bool {
        self.side.staging.as_mut().is_some_and(|s| s.write(offset, data))
    }

    /// Copies staging bytes at `offset` into `buf`.
    pub(super) fn unstage(&self, offset: usize, buf: &mut [u8]) -> bool {
        self.side.staging.as_ref().is_some_and(|s| s.read(offset, buf))
    }

    /// Posts `works` as one chain of signaled work requests and waits until
    /// each has completed. Returns only when the NIC no longer works on any
    /// of them.
    pub(super) fn run(&mut self, works: &[Work], timeout: Duration) -> Result<(), RunFailure> {
        if works.is_empty() {
            return Ok(());
        }
        let qp = self.qp;
        let side = &mut *self.side;
        let Some(staging) = side.staging.as_ref().filter(|_| !side.broken) else {
            return Err(RunFailure::Post {
                index: 0,
                error: io::Error::new(io::ErrorKind::BrokenPipe, "the queue pair timed out before and is unusable"),
            });
        };
        if works.len() > qp.max_send_wr as usize {
            return Err(RunFailure::Post {
                index: qp.max_send_wr as usize,
                error: io::Error::new(io::ErrorKind::InvalidInput, "more work requests than the send queue holds"),
            });
        }
        side.sges.clear();
        side.wrs.clear();
        for (index, work) in works.iter().enumerate() {
            if !staging.range_ok(work.local, work.len as usize) {
                return Err(RunFailure::Post {
                    index,
                    error: io::Error::new(io::ErrorKind::InvalidInput, "a work request lies outside staging"),
                });
            }
            side.sges.push(ibv_sge {
                addr: staging.addr() + work.local as u64,
                length: work.len,
                lkey: staging.lkey(),
            });
            let fence = if work.fence { ibv_send_flags::IBV_SEND_FENCE } else { ibv_send_flags(0) };
            // The rest is zero: null `next` and `sg_list` (linked below) and
            // zeroed unions.
            let mut wr = ibv_send_wr {
                wr_id: index as u64,
                num_sge: 1,
                opcode: match work.op {
                    WorkOp::Read => ibv_wr_opcode::IBV_WR_RDMA_READ,
                    WorkOp::Write => ibv_wr_opcode::IBV_WR_RDMA_WRITE,
                    WorkOp::Send => ibv_wr_opcode::IBV_WR_SEND,
                },
                send_flags: (ibv_send_flags::IBV_SEND_SIGNALED | fence).0,
                ..Default::default()
            };
            if work.op != WorkOp::Send {
                // The `rdma` member of the `wr` union (writing it is safe).
                wr.wr.rdma.remote_addr = work.remote_addr;
                wr.wr.rdma.rkey = work.rkey;
            }
            side.wrs.push(wr);
        }
        // Link the chain; neither vector reallocates from here on.
        let sges = side.sges.as_mut_ptr();
        let wrs = side.wrs.as_mut_ptr();
        for i in 0..works.len() {
            // SAFETY: `i` and `i + 1` index the vectors (both `works.len()`
            // long); the pointers stay valid while they are not resized.
            unsafe {
                (*wrs.add(i)).sg_list = sges.add(i);
                if i + 1 < works.len() {
                    (*wrs.add(i)).next = wrs.add(i + 1);
                }
            }
        }
        let mut bad: *mut ibv_send_wr = std::ptr::null_mut();
        // SAFETY: a live queue pair and a well-formed chain of `works.len()`
        // work requests whose buffers lie in the registered staging memory
        // (checked above) owned by this queue pair. The staging memory is not
        // touched by Rust code until every posted request has completed
        // (below); the request structs are copied by the provider.
        let rc = unsafe { (qp.post_send_fn)(qp.raw.as_ptr(), wrs, &mut bad) };
        let (posted, post_error) = if rc == 0 {
            (works.len(), None)
        } else {
            // Requests before the one `bad` points at were posted.
            let index = if bad.is_null() {
                0
            } else {
                // SAFETY: `bad` points into the chain, i.e. into `side.wrs`.
                usize::try_from(unsafe { bad.offset_from(wrs) }).unwrap_or(0).min(works.len())
            };
            let error = if rc > 0 { io::Error::from_raw_os_error(rc) } else { io::Error::last_os_error() };
            (index, Some((index, error)))
        };

        side.statuses.clear();
        side.statuses.resize(posted, None);
        let stuck = !wait_for(qp, &mut side.wcs, &mut side.statuses, posted, Instant::now() + timeout);
        if stuck {
            // Stop the queue pair: the provider flushes what is outstanding.
            qp.set_error();
            if !wait_for(qp, &mut side.wcs, &mut side.statuses, posted, Instant::now() + FLUSH_GRACE) {
                // The device reports nothing: never release memory it may
                // still DMA into.
                if let Some(staging) = side.staging.take() {
                    std::mem::forget(staging);
                }
            }
        }
        let first_failure = side.statuses.iter().position(|s| *s != Some(SUCCESS));
        if stuck {
            side.broken = true;
            if let Some(index) = first_failure {
                return Err(RunFailure::Stuck { index });
            }
        }
        match (first_failure, post_error) {
            (Some(index), _) => match side.statuses[index] {
                Some(status) => Err(RunFailure::Completion { index, status }),
                None => Err(RunFailure::Stuck { index }),
            },
            (None, Some((index, error))) => Err(RunFailure::Post { index, error }),
            (None, None) => Ok(()),
        }
    }
}

const SUCCESS: u32 = ibv_wc_status::IBV_WC_SUCCESS;

/// Polls the queue pair's send CQ until `statuses` holds a status for each
/// of the first `posted` work requests; false if `deadline` passed first.
fn wait_for(qp: &Qp, wcs: &mut [ibv_wc], statuses: &mut [Option<u32>], posted: usize, deadline: Instant) -> bool {
    let mut missing = statuses.iter().filter(|s| s.is_none()).count();
    let mut idle: u32 = 0;
    while missing > 0 {
        let Ok(n) = qp.send_cq.poll(wcs) else { return false };
        for wc in &wcs[..n] {
            let Ok(id) = usize::try_from(wc.wr_id()) else { continue };
            if id < posted && statuses[id].is_none() {
                statuses[id] = Some(wc.error().map_or(SUCCESS, |(status, _)| status));
                missing -= 1;
            }
        }
        if n == 0 {
            idle = idle.saturating_add(1);
            if idle % 1024 == 0 {
                if Instant::now() >= deadline {
                    return false;
                }
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        } else {
            idle = 0;
        }
    }
    true
}
