//! The part of the libibverbs C ABI this backend uses: the bindgen-generated
//! bindings of `ibverbs-sys` (rdma-core v55's `verbs.h`), re-exported.
//!
//! The `ibverbs` crate (0.9) wraps contexts, protection domains, queue pairs
//! and memory regions, but its queue pair only posts `IBV_WR_SEND`, and it
//! hides every raw handle, so RDMA READ and WRITE cannot be posted through
//! it. The backend therefore calls libibverbs through `ibverbs-sys` directly
//! (in [`super::sys`]); bindgen checks every structure's layout at compile
//! time. `ibv_wc` is the one type `ibverbs-sys` defines by hand (private
//! fields and accessors).
//!
//! What `ibverbs-sys` lacks, declared here:
//!
//! - names for the function-pointer types of the `poll_cq`, `post_send` and
//!   `post_recv` entries of `ibv_context_ops` (bindgen writes them inline in
//!   the field types). `ibv_poll_cq`, `ibv_post_send` and `ibv_post_recv` are
//!   `static inline` functions of `verbs.h` that call through that table, so
//!   bindgen generates no function for them. The aliases are checked against
//!   the generated field types wherever a field is read into one.
//! - the size of `struct _compat_ibv_port_attr`, which `verbs.h` leaves
//!   incomplete (bindgen makes it opaque): the exported `ibv_query_port`
//!   fills only that 48-byte prefix of `ibv_port_attr`, so the assertions
//!   below pin every field [`super::sys`] reads inside it.
//!
//! Declaring these items needs no `unsafe`; calling them does, in
//! [`super::sys`].

use std::os::raw::c_int;

pub(super) use ibverbs_sys::{
    _ibv_query_gid_ex, ibv_access_flags, ibv_alloc_pd, ibv_close_device, ibv_context, ibv_cq, ibv_create_cq,
    ibv_create_qp, ibv_dealloc_pd, ibv_dereg_mr, ibv_destroy_cq, ibv_destroy_qp, ibv_device, ibv_device_attr,
    ibv_free_device_list, ibv_get_device_list, ibv_get_device_name, ibv_gid, ibv_gid_entry, ibv_modify_qp, ibv_mr,
    ibv_open_device, ibv_pd, ibv_port_attr, ibv_port_state, ibv_qp, ibv_qp_attr, ibv_qp_attr_mask, ibv_qp_cap,
    ibv_qp_init_attr, ibv_qp_state, ibv_qp_type, ibv_query_device, ibv_query_port, ibv_recv_wr, ibv_reg_mr,
    ibv_send_flags, ibv_send_wr, ibv_sge, ibv_wc, ibv_wc_status, ibv_wc_status_str, ibv_wr_opcode,
    IBV_GID_TYPE_ROCE_V2, IBV_LINK_LAYER_ETHERNET,
};

/// The type of `ibv_context_ops::poll_cq` (what `ibv_poll_cq` calls).
pub(super) type PollCqFn = unsafe extern "C" fn(cq: *mut ibv_cq, num_entries: c_int, wc: *mut ibv_wc) -> c_int;
/// The type of `ibv_context_ops::post_send` (what `ibv_post_send` calls).
pub(super) type PostSendFn =
    unsafe extern "C" fn(qp: *mut ibv_qp, wr: *mut ibv_send_wr, bad_wr: *mut *mut ibv_send_wr) -> c_int;
/// The type of `ibv_context_ops::post_recv` (what `ibv_post_recv` calls).
pub(super) type PostRecvFn =
    unsafe extern "C" fn(qp: *mut ibv_qp, wr: *mut ibv_recv_wr, bad_wr: *mut *mut ibv_recv_wr) -> c_int;

/// Bytes of `struct _compat_ibv_port_attr` (rdma-core `libibverbs/verbs.c`):
/// `ibv_port_attr` up to and including `flags`, which is what the exported
/// `ibv_query_port` writes.
const COMPAT_PORT_ATTR_BYTES: usize = 48;

// Every `ibv_port_attr` field `sys` reads lies in the prefix the exported
// `ibv_query_port` fills.
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<ibv_port_attr>() >= COMPAT_PORT_ATTR_BYTES);
    assert!(offset_of!(ibv_port_attr, flags) + size_of::<u8>() == COMPAT_PORT_ATTR_BYTES);
    assert!(offset_of!(ibv_port_attr, state) < COMPAT_PORT_ATTR_BYTES);
    assert!(offset_of!(ibv_port_attr, active_mtu) < COMPAT_PORT_ATTR_BYTES);
    assert!(offset_of!(ibv_port_attr, gid_tbl_len) < COMPAT_PORT_ATTR_BYTES);
    assert!(offset_of!(ibv_port_attr, max_msg_sz) < COMPAT_PORT_ATTR_BYTES);
    assert!(offset_of!(ibv_port_attr, lid) < COMPAT_PORT_ATTR_BYTES);
    assert!(offset_of!(ibv_port_attr, link_layer) < COMPAT_PORT_ATTR_BYTES);
};
