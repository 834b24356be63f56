//! The verbs backend (cargo feature `verbs`).
//!
//! - Everywhere: without an RDMA device, construction fails with
//!   `VerbsError::NoDevice`; the control-plane messages survive a serde
//!   round trip.
//! - Only with `RESC_TEST_RDMA=1`, on a machine with an RDMA device (a NIC,
//!   or SoftRoCE: `rdma link add rxe0 type rxe netdev eth0`): the resc-core
//!   conformance suites against a `VerbsMemory` and a `VerbsTransport` in
//!   loopback on the local device, messages between two transports over
//!   SEND/RECV, and connection through explicit control messages.
//!   `RESC_RDMA_DEVICE` and `RESC_RDMA_GID_INDEX` pick the device and GID.
#![cfg(feature = "verbs")]
#![allow(clippy::unwrap_used)]

use resc_core::ids::{AccessKey, ComputeId, Endpoint, InvocationId, NodeId, RegionId};
use resc_core::pool::MemoryPool;
use resc_core::testkit;
use resc_core::transport::{RemoteRegion, Transport, TransportError};
use resc_rdma::verbs::{
    self, ConnectAccept, ConnectHandler, ConnectRefused, ConnectReply, ConnectRequest, ConnectTarget, ControlMessage,
    Disconnect, LocalConnector, QueuePairInfo, Refusal, RegionAccess, VerbsConfig, VerbsError, VerbsMemory,
    VerbsTransport,
};
use std::sync::Arc;
use std::time::Duration;

fn rdma_tests_enabled(test: &str) -> bool {
    let enabled = std::env::var("RESC_TEST_RDMA").is_ok_and(|v| v == "1");
    if !enabled {
        eprintln!("{test}: skipped; it needs RDMA hardware (set RESC_TEST_RDMA=1 on a machine with an RDMA device)");
    }
    enabled
}

/// Opened on the local RDMA device, or a failure saying why not.
fn on_device<T>(what: &str, opened: Result<T, VerbsError>) -> T {
    opened.unwrap_or_else(|e| panic!("RESC_TEST_RDMA=1, but opening {what} failed: {e}"))
}

fn config() -> VerbsConfig {
    let mut config = VerbsConfig::default();
    config.device = std::env::var("RESC_RDMA_DEVICE").ok();
    config.gid_index = std::env::var("RESC_RDMA_GID_INDEX").ok().and_then(|v| v.parse().ok());
    config
}

#[test]
fn without_rdma_hardware_construction_fails_with_a_clear_error() {
    if let Ok(devices) = verbs::devices() {
        if !devices.is_empty() {
            eprintln!("this machine has RDMA devices {devices:?}; the no-device error cannot be observed here");
            return;
        }
    }
    let config = VerbsConfig::default();
    let transport = VerbsTransport::open(NodeId(100), &config);
    let err = transport.expect_err("a transport opened without an RDMA device");
    assert!(matches!(err, VerbsError::NoDevice { .. }), "expected NoDevice, got {err:?}");
    assert!(err.is_no_device());
    let message = err.to_string();
    assert!(message.contains("no RDMA device found"), "{message}");
    assert!(message.contains("RDMA hardware"), "{message}");

    let memory = VerbsMemory::open(NodeId(1), 1 << 20, &config);
    let err = memory.expect_err("a memory node opened without an RDMA device");
    assert!(matches!(err, VerbsError::NoDevice { .. }), "expected NoDevice, got {err:?}");
    assert!(err.to_string().contains("RDMA hardware"));

    let connector: Arc<LocalConnector> = Arc::new(LocalConnector::new());
    let err = VerbsTransport::with_connector(NodeId(100), &config, connector).expect_err("no device");
    assert!(err.is_no_device());
}

#[test]
fn a_bad_configuration_is_refused_before_the_device_is_touched() {
    let mut config = VerbsConfig::default();
    config.port = 0;
    assert!(matches!(VerbsTransport::open(NodeId(1), &config), Err(VerbsError::Config(_))));
    let mut config = VerbsConfig::default();
    config.message_slot_bytes = 16;
    assert!(matches!(VerbsMemory::open(NodeId(1), 1 << 20, &config), Err(VerbsError::Config(_))));
}

#[test]
fn the_local_connector_reports_nodes_it_cannot_reach() {
    let connector = LocalConnector::new();
    let request = sample_request();
    let err = verbs::Connector::connect(&connector, &request).expect_err("nothing attached");
    assert!(matches!(err, VerbsError::Unreachable { node: NodeId(2), .. }), "{err:?}");
}

fn sample_info(qpn: u32) -> QueuePairInfo {
    QueuePairInfo {
        lid: 0x1234,
        gid: Some([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 7]),
        qpn,
        psn: 0x00ab_cdef,
        mtu: 5,
        initiator_depth: 16,
        responder_resources: 8,
        recv_slot_bytes: 65536,
    }
}

fn sample_request() -> ConnectRequest {
    ConnectRequest {
        from: NodeId(1),
        to: NodeId(2),
        connection: u64::MAX - 3,
        target: ConnectTarget::Region { region: RegionId(77), key: AccessKey(0xdead_beef_f00d_cafe) },
        qp: sample_info(0x11),
    }
}

#[test]
fn control_messages_survive_a_serde_round_trip() {
    let request = sample_request();
    let peer_request = ConnectRequest {
        target: ConnectTarget::Peer,
        qp: QueuePairInfo { gid: None, ..sample_info(9) },
        ..request.clone()
    };
    let accept = ConnectReply::Accept(ConnectAccept {
        from: NodeId(2),
        to: NodeId(1),
        connection: request.connection,
        qp: sample_info(0x22),
        region: Some(RegionAccess { addr: 0x7f12_3456_7000, rkey: 0x0102_0304, len: 64 << 20 }),
    });
    let peer_accept = ConnectReply::Accept(ConnectAccept {
        from: NodeId(2),
        to: NodeId(1),
        connection: 5,
        qp: sample_info(0x23),
        region: None,
    });
    let refusals = [
        Refusal::UnknownRegion,
        Refusal::AccessDenied,
        Refusal::Unsupported,
        Refusal::WrongNode,
        Refusal::Failed("ibv_create_qp: no memory".into()),
    ];
    let disconnect = Disconnect { from: NodeId(1), to: NodeId(2), requester: NodeId(1), connection: 42 };

    let mut messages = vec![
        ControlMessage::Connect(request.clone()),
        ControlMessage::Connect(peer_request),
        ControlMessage::Reply(accept.clone()),
        ControlMessage::Reply(peer_accept),
        ControlMessage::Disconnect(disconnect),
    ];
    for reason in refusals {
        messages.push(ControlMessage::Reply(ConnectReply::refuse(&request, reason)));
    }
    for message in &messages {
        assert_eq!(&round_trip(message), message);
    }
    // Each type on its own, too.
    assert_eq!(round_trip(&request), request);
    assert_eq!(round_trip(&accept), accept);
    assert_eq!(round_trip(&disconnect), disconnect);
    assert_eq!(round_trip(&sample_info(1)), sample_info(1));

    // Routing helpers.
    assert_eq!(messages[0].destination(), NodeId(2));
    assert_eq!(messages[2].destination(), NodeId(1));
    assert_eq!(accept.from(), NodeId(2));
    assert_eq!(accept.connection(), request.connection);
    let refused = ConnectReply::refuse(&request, Refusal::AccessDenied);
    assert_eq!(
        refused,
        ConnectReply::Refuse(ConnectRefused {
            from: NodeId(2),
            to: NodeId(1),
            connection: request.connection,
            reason: Refusal::AccessDenied
        })
    );
}

fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(value: &T) -> T {
    let tokens = tokens::to_tokens(value).unwrap();
    tokens::from_tokens(tokens).unwrap()
}

/// A small serde data format (values as a token stream), enough to round
/// trip the control-plane messages without a format crate.
mod tokens {
    use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
    use serde::ser::{self, Serialize};
    use std::fmt;

    #[derive(Debug, Clone, PartialEq)]
    pub(super) enum Tok {
        Bool(bool),
        U(u64),
        I(i64),
        F(f64),
        Str(String),
        Bytes(Vec<u8>),
        None,
        Some,
        Unit,
        Seq(usize),
        Map(usize),
        Variant(u32),
    }

    #[derive(Debug)]
    pub(super) struct Error(String);

    impl fmt::Display for Error {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for Error {}

    impl ser::Error for Error {
        fn custom<T: fmt::Display>(msg: T) -> Self {
            Error(msg.to_string())
        }
    }

    impl de::Error for Error {
        fn custom<T: fmt::Display>(msg: T) -> Self {
            Error(msg.to_string())
        }
    }

    pub(super) fn to_tokens<T: Serialize>(value: &T) -> Result<Vec<Tok>, Error> {
        let mut ser = Ser(Vec::new());
        value.serialize(&mut ser)?;
        Ok(ser.0)
    }

    pub(super) fn from_tokens<T: de::DeserializeOwned>(tokens: Vec<Tok>) -> Result<T, Error> {
        let mut de = De { tokens, pos: 0 };
        let value = T::deserialize(&mut de)?;
        if de.pos != de.tokens.len() {
            return Err(Error("trailing tokens".into()));
        }
        Ok(value)
    }

    struct Ser(Vec<Tok>);

    impl ser::Serializer for &mut Ser {
        type Ok = ();
        type Error = Error;
        type SerializeSeq = Self;
        type SerializeTuple = Self;
        type SerializeTupleStruct = Self;
        type SerializeTupleVariant = Self;
        type SerializeMap = Self;
        type SerializeStruct = Self;
        type SerializeStructVariant = Self;

        fn serialize_bool(self, v: bool) -> Result<(), Error> {
            self.0.push(Tok::Bool(v));
            Ok(())
        }
        fn serialize_i8(self, v: i8) -> Result<(), Error> {
            self.serialize_i64(v.into())
        }
        fn serialize_i16(self, v: i16) -> Result<(), Error> {
            self.serialize_i64(v.into())
        }
        fn serialize_i32(self, v: i32) -> Result<(), Error> {
            self.serialize_i64(v.into())
        }
        fn serialize_i64(self, v: i64) -> Result<(), Error> {
            self.0.push(Tok::I(v));
            Ok(())
        }
        fn serialize_u8(self, v: u8) -> Result<(), Error> {
            self.serialize_u64(v.into())
        }
        fn serialize_u16(self, v: u16) -> Result<(), Error> {
            self.serialize_u64(v.into())
        }
        fn serialize_u32(self, v: u32) -> Result<(), Error> {
            self.serialize_u64(v.into())
        }
        fn serialize_u64(self, v: u64) -> Result<(), Error> {
            self.0.push(Tok::U(v));
            Ok(())
        }
        fn serialize_f32(self, v: f32) -> Result<(), Error> {
            self.serialize_f64(v.into())
        }
        fn serialize_f64(self, v: f64) -> Result<(), Error> {
            self.0.push(Tok::F(v));
            Ok(())
        }
        fn serialize_char(self, v: char) -> Result<(), Error> {
            self.serialize_str(&v.to_string())
        }
        fn serialize_str(self, v: &str) -> Result<(), Error> {
            self.0.push(Tok::Str(v.to_owned()));
            Ok(())
        }
        fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
            self.0.push(Tok::Bytes(v.to_vec()));
            Ok(())
        }
        fn serialize_none(self) -> Result<(), Error> {
            self.0.push(Tok::None);
            Ok(())
        }
        fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), Error> {
            self.0.push(Tok::Some);
            value.serialize(self)
        }
        fn serialize_unit(self) -> Result<(), Error> {
            self.0.push(Tok::Unit);
            Ok(())
        }
        fn serialize_unit_struct(self, _: &'static str) -> Result<(), Error> {
            self.serialize_unit()
        }
        fn serialize_unit_variant(self, _: &'static str, index: u32, _: &'static str) -> Result<(), Error> {
            self.0.push(Tok::Variant(index));
            Ok(())
        }
        fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, value: &T) -> Result<(), Error> {
            value.serialize(self)
        }
        fn serialize_newtype_variant<T: ?Sized + Serialize>(
            self,
            _: &'static str,
            index: u32,
            _: &'static str,
            value: &T,
        ) -> Result<(), Error> {
            self.0.push(Tok::Variant(index));
            value.serialize(self)
        }
        fn serialize_seq(self, len: Option<usize>) -> Result<Self, Error> {
            let len = len.ok_or(Error("sequences need a length".into()))?;
            self.0.push(Tok::Seq(len));
            Ok(self)
        }
        fn serialize_tuple(self, len: usize) -> Result<Self, Error> {
            self.0.push(Tok::Seq(len));
            Ok(self)
        }
        fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Self, Error> {
            self.serialize_tuple(len)
        }
        fn serialize_tuple_variant(
            self,
            _: &'static str,
            index: u32,
            _: &'static str,
            len: usize,
        ) -> Result<Self, Error> {
            self.0.push(Tok::Variant(index));
            self.serialize_tuple(len)
        }
        fn serialize_map(self, len: Option<usize>) -> Result<Self, Error> {
            let len = len.ok_or(Error("maps need a length".into()))?;
            self.0.push(Tok::Map(len));
            Ok(self)
        }
        fn serialize_struct(self, _: &'static str, len: usize) -> Result<Self, Error> {
            self.serialize_tuple(len)
        }
        fn serialize_struct_variant(
            self,
            _: &'static str,
            index: u32,
            _: &'static str,
            len: usize,
        ) -> Result<Self, Error> {
            self.0.push(Tok::Variant(index));
            self.serialize_tuple(len)
        }
    }

    macro_rules! compound {
        ($($trait:ident :: $method:ident),*) => {$(
            impl ser::$trait for &mut Ser {
                type Ok = ();
                type Error = Error;
                fn $method<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
                    value.serialize(&mut **self)
                }
                fn end(self) -> Result<(), Error> {
                    Ok(())
                }
            }
        )*};
    }
    compound!(
        SerializeSeq::serialize_element,
        SerializeTuple::serialize_element,
        SerializeTupleStruct::serialize_field,
        SerializeTupleVariant::serialize_field
    );

    impl ser::SerializeMap for &mut Ser {
        type Ok = ();
        type Error = Error;
        fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), Error> {
            key.serialize(&mut **self)
        }
        fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
            value.serialize(&mut **self)
        }
        fn end(self) -> Result<(), Error> {
            Ok(())
        }
    }

    impl ser::SerializeStruct for &mut Ser {
        type Ok = ();
        type Error = Error;
        fn serialize_field<T: ?Sized + Serialize>(&mut self, _: &'static str, value: &T) -> Result<(), Error> {
            value.serialize(&mut **self)
        }
        fn end(self) -> Result<(), Error> {
            Ok(())
        }
    }

    impl ser::SerializeStructVariant for &mut Ser {
        type Ok = ();
        type Error = Error;
        fn serialize_field<T: ?Sized + Serialize>(&mut self, _: &'static str, value: &T) -> Result<(), Error> {
            value.serialize(&mut **self)
        }
        fn end(self) -> Result<(), Error> {
            Ok(())
        }
    }

    struct De {
        tokens: Vec<Tok>,
        pos: usize,
    }

    impl De {
        fn next(&mut self) -> Result<Tok, Error> {
            let tok = self.tokens.get(self.pos).cloned().ok_or(Error("out of tokens".into()))?;
            self.pos += 1;
            Ok(tok)
        }
    }

    impl<'de> de::Deserializer<'de> for &mut De {
        type Error = Error;

        fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.next()? {
                Tok::Bool(v) => visitor.visit_bool(v),
                Tok::U(v) => visitor.visit_u64(v),
                Tok::I(v) => visitor.visit_i64(v),
                Tok::F(v) => visitor.visit_f64(v),
                Tok::Str(v) => visitor.visit_string(v),
                Tok::Bytes(v) => visitor.visit_byte_buf(v),
                Tok::Unit => visitor.visit_unit(),
                Tok::Seq(len) => visitor.visit_seq(Items { de: self, left: len }),
                Tok::Map(len) => visitor.visit_map(Items { de: self, left: len }),
                other => Err(Error(format!("unexpected {other:?}"))),
            }
        }

        fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.next()? {
                Tok::None => visitor.visit_none(),
                Tok::Some => visitor.visit_some(self),
                other => Err(Error(format!("expected an option, found {other:?}"))),
            }
        }

        fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, visitor: V) -> Result<V::Value, Error> {
            visitor.visit_newtype_struct(self)
        }

        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _: &'static str,
            _: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Error> {
            visitor.visit_enum(self)
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
        }
    }

    impl<'de> de::EnumAccess<'de> for &mut De {
        type Error = Error;
        type Variant = Self;

        fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), Error> {
            match self.next()? {
                Tok::Variant(index) => {
                    let value = seed.deserialize(index.into_deserializer())?;
                    Ok((value, self))
                }
                other => Err(Error(format!("expected a variant, found {other:?}"))),
            }
        }
    }

    impl<'de> de::VariantAccess<'de> for &mut De {
        type Error = Error;

        fn unit_variant(self) -> Result<(), Error> {
            Ok(())
        }
        fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, Error> {
            seed.deserialize(self)
        }
        fn tuple_variant<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value, Error> {
            de::Deserializer::deserialize_any(self, visitor)
        }
        fn struct_variant<V: Visitor<'de>>(self, _: &'static [&'static str], visitor: V) -> Result<V::Value, Error> {
            de::Deserializer::deserialize_any(self, visitor)
        }
    }

    struct Items<'a> {
        de: &'a mut De,
        left: usize,
    }

    impl<'de> de::SeqAccess<'de> for Items<'_> {
        type Error = Error;
        fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, Error> {
            if self.left == 0 {
                return Ok(None);
            }
            self.left -= 1;
            seed.deserialize(&mut *self.de).map(Some)
        }
    }

    impl<'de> de::MapAccess<'de> for Items<'_> {
        type Error = Error;
        fn next_key_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, Error> {
            if self.left == 0 {
                return Ok(None);
            }
            self.left -= 1;
            seed.deserialize(&mut *self.de).map(Some)
        }
        fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, Error> {
            seed.deserialize(&mut *self.de)
        }
    }
}

// ---- Opt-in: on RDMA hardware only -------------------------------------

#[test]
fn conformance_suites_in_loopback_on_rdma_hardware() {
    if !rdma_tests_enabled("conformance_suites_in_loopback_on_rdma_hardware") {
        return;
    }
    let config = config();
    let connector = Arc::new(LocalConnector::new());
    // One memory node for the transport suite, one the pool suite has to
    // itself. The first tells the transport when it frees a region (through
    // the connector); the second does not, so the transport learns it from
    // the NIC's remote access error.
    let shared = Arc::new(on_device(
        "a memory node",
        VerbsMemory::with_connector(NodeId(1), 16 << 20, &config, connector.clone()),
    ));
    let exclusive = Arc::new(on_device("a memory node", VerbsMemory::open(NodeId(2), 4 << 20, &config)));
    connector.attach(&shared);
    connector.attach(&exclusive);
    let transport =
        Arc::new(on_device("a transport", VerbsTransport::with_connector(NodeId(100), &config, connector.clone())));
    connector.attach(&transport);
    eprintln!("running the conformance suites on RDMA device {}", transport.device_name());

    testkit::transport::transport_suite(shared.as_ref(), transport.as_ref());
    // Each region the suite freed was announced, dropped by the transport,
    // and its queue pair released at the memory node.
    assert_eq!(shared.connections(), 0, "queue pairs of freed regions outlived their Disconnect notices");
    testkit::pool::memory_pool_suite(exclusive.as_ref(), transport.as_ref());
}

fn endpoint(component: u32) -> Endpoint {
    Endpoint { invocation: InvocationId(0x7e57_0000_0000_0001), component: ComputeId(component), instance: 0 }
}

#[test]
fn messages_between_two_compute_nodes_travel_over_send_recv() {
    if !rdma_tests_enabled("messages_between_two_compute_nodes_travel_over_send_recv") {
        return;
    }
    let config = config();
    let connector = Arc::new(LocalConnector::new());
    let a = Arc::new(on_device("a transport", VerbsTransport::with_connector(NodeId(100), &config, connector.clone())));
    let b = Arc::new(on_device("a transport", VerbsTransport::with_connector(NodeId(101), &config, connector.clone())));
    connector.attach(&a);
    connector.attach(&b);
    let (ea, eb, nowhere) = (endpoint(1), endpoint(2), endpoint(99));
    a.open_endpoint(&ea).unwrap();
    b.open_endpoint(&eb).unwrap();
    a.route_endpoint(eb.clone(), NodeId(101));
    a.route_endpoint(nowhere.clone(), NodeId(101));
    b.route_endpoint(ea.clone(), NodeId(100));

    for i in 0..200u32 {
        a.send(&ea, &eb, &i.to_le_bytes()).unwrap();
    }
    for i in 0..200u32 {
        let message = b.recv(&eb, Duration::from_secs(10)).unwrap();
        assert_eq!((message.from.clone(), message.payload), (ea.clone(), i.to_le_bytes().to_vec()));
    }
    // Larger than one receive buffer, and empty.
    let big: Vec<u8> = (0..(1 << 20) + 12_345).map(|i| (i % 251) as u8).collect();
    a.send(&ea, &eb, &big).unwrap();
    a.send(&ea, &eb, &[]).unwrap();
    assert!(b.recv(&eb, Duration::from_secs(10)).unwrap().payload == big);
    assert!(b.recv(&eb, Duration::from_secs(10)).unwrap().payload.is_empty());
    // The receiver says when the endpoint is not open.
    let err = a.send(&ea, &nowhere, b"hello").unwrap_err();
    assert!(matches!(&err, TransportError::UnknownEndpoint(e) if *e == nowhere), "{err:?}");
    // And back.
    b.send(&eb, &ea, b"back").unwrap();
    assert_eq!(a.recv(&ea, Duration::from_secs(10)).unwrap().payload, b"back");
    assert!(a.peer_connections() >= 1 && b.peer_connections() >= 1);
    // Both directions at once, from several threads.
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let (a, b, ea, eb) = (&a, &b, &ea, &eb);
            s.spawn(move || {
                for i in 0..50u8 {
                    a.send(ea, eb, &[t, i]).unwrap();
                    b.send(eb, ea, &[t, i]).unwrap();
                }
            });
        }
    });
    for (at, transport) in [(&eb, &b), (&ea, &a)] {
        let mut next = [0u8; 4];
        for _ in 0..200 {
            let m = transport.recv(at, Duration::from_secs(10)).unwrap();
            let (t, i) = (m.payload[0] as usize, m.payload[1]);
            assert_eq!(i, next[t], "messages of one sender arrive in order");
            next[t] += 1;
        }
    }
}

#[test]
fn queue_pairs_connect_through_explicit_control_messages() {
    if !rdma_tests_enabled("queue_pairs_connect_through_explicit_control_messages") {
        return;
    }
    let config = config();
    let memory = on_device("a memory node", VerbsMemory::open(NodeId(3), 1 << 20, &config));
    let transport = on_device("a transport", VerbsTransport::open(NodeId(100), &config));
    let region = memory.allocate(4096).unwrap();

    // No queue pair and no connector: a clear error, nothing sent.
    let err = transport.write(&region, 0, b"x").unwrap_err();
    assert!(matches!(&err, TransportError::Disconnected(m) if m.contains("prepare_region")), "{err:?}");

    // The platform carries the request and the reply.
    let forged = RemoteRegion { key: AccessKey(region.key.0 ^ 1), ..region };
    let request = transport.prepare_region(&forged).unwrap();
    let reply = memory.handle_connect(&request);
    let err = transport.complete(&reply).unwrap_err();
    assert!(matches!(err, VerbsError::Refused { reason: Refusal::AccessDenied, .. }), "{err:?}");

    let request = transport.prepare_region(&region).unwrap();
    let reply = memory.handle_connect(&request);
    transport.complete(&reply).unwrap();
    assert!(matches!(transport.complete(&reply), Err(VerbsError::UnexpectedReply { .. })));
    assert_eq!(memory.connections(), 1);

    transport.write(&region, 100, b"connected by control messages").unwrap();
    let mut back = [0u8; 29];
    transport.read(&region, 100, &mut back).unwrap();
    assert_eq!(&back, b"connected by control messages");
    assert!(matches!(transport.read(&forged, 0, &mut back), Err(TransportError::AccessDenied { .. })));
    assert!(matches!(transport.read(&region, 4090, &mut back), Err(TransportError::OutOfBounds { .. })));

    // Freed: the memory node's NIC refuses, and the transport says why.
    memory.free(&region).unwrap();
    let err = transport.read(&region, 0, &mut back).unwrap_err();
    assert!(matches!(err, TransportError::UnknownRegion { .. }), "{err:?}");
    memory.handle_disconnect(&Disconnect {
        from: NodeId(100),
        to: NodeId(3),
        requester: NodeId(100),
        connection: request.connection,
    });
    assert_eq!(memory.connections(), 0);
}
