//! TLS as nsqd negotiates it: IDENTIFY with `tls_v1`, the plain reply, a
//! TLS handshake, `OK` over TLS, then snappy or deflate on top; the
//! client-certificate policies; `tls_required`; and HTTPS on the HTTP API.
//! Certificates are made per test with rcgen (a CA, a server certificate
//! for localhost/127.0.0.1, client certificates from that CA and not).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use common::{body_str, start_broker, Client, TestBroker};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use triage_config::{BrokerConfig, TlsClientAuthPolicy};
use triage_protocol::{ErrorCode, Frame};

/// A CA and what it signed, written as PEM files in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

/// A certificate with its key, for a client.
struct Identity {
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "triage test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
            ca,
            ca_key,
        };
        std::fs::write(pki.path("ca.pem"), pki.ca.pem()).unwrap();
        let (cert, key) = pki.signed(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        std::fs::write(pki.path("server.pem"), cert.pem()).unwrap();
        std::fs::write(pki.path("server.key"), key.serialize_pem()).unwrap();
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn signed(
        &self,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> (rcgen::Certificate, KeyPair) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        (cert, key)
    }

    /// A client certificate signed by this CA.
    fn client(&self) -> Identity {
        let (cert, key) = self.signed(&["worker-1"], ExtendedKeyUsagePurpose::ClientAuth);
        identity(&cert, &key)
    }

    /// The broker's TLS settings.
    fn configure(&self, config: &mut BrokerConfig) {
        config.tls_cert = Some(self.path("server.pem"));
        config.tls_key = Some(self.path("server.key"));
        config.tls_root_ca_file = Some(self.path("ca.pem"));
    }

    /// A client config that trusts this CA, presenting `identity` if given.
    fn client_config(&self, identity: Option<Identity>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        Arc::new(match identity {
            Some(Identity { cert, key }) => builder.with_client_auth_cert(vec![cert], key).unwrap(),
            None => builder.with_no_client_auth(),
        })
    }
}

fn identity(cert: &rcgen::Certificate, key: &KeyPair) -> Identity {
    Identity {
        cert: cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

/// A certificate no CA of the broker's signed.
fn stranger() -> Identity {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["mallory".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    identity(&cert, &key)
}

async fn tls_client(
    tb: &TestBroker,
    config: Arc<rustls::ClientConfig>,
    extra: Value,
) -> (Client, Value) {
    let mut client = tb.connect().await;
    client.tls = Some(config);
    let mut request = json!({ "feature_negotiation": true, "tls_v1": true });
    if let (Some(request), Some(extra)) = (request.as_object_mut(), extra.as_object()) {
        request.extend(extra.clone());
    }
    let reply = client.identify_ok(request).await.unwrap();
    (client, reply)
}

/// Publishes on `producer` and reads it back on a consumer of the same kind.
async fn round_trip(producer: &mut Client, consumer: &mut Client, topic: &str) {
    consumer.sub(topic, "c").await;
    consumer.rdy(100).await;
    let bodies: Vec<Bytes> = (0..20)
        .map(|i| Bytes::from(format!("ticket {i} {}", "x".repeat(500))))
        .collect();
    producer.mpub(topic, bodies.clone()).await;
    let got = consumer.read_messages(bodies.len()).await;
    for (msg, sent) in got.iter().zip(&bodies) {
        assert_eq!(msg.body, *sent);
        consumer.fin(&msg.id).await;
    }
}

#[tokio::test]
async fn identify_upgrades_to_tls_and_messages_flow_over_it() {
    let pki = Pki::new();
    let tb = start_broker(|c| pki.configure(c)).await;
    let (mut producer, reply) = tls_client(&tb, pki.client_config(None), json!({})).await;
    assert_eq!(reply["tls_v1"], true);
    assert!(producer.is_tls());
    let (mut consumer, _) = tls_client(&tb, pki.client_config(None), json!({})).await;
    round_trip(&mut producer, &mut consumer, "secure").await;

    let stats = tb
        .broker()
        .existing_channel("secure", "c")
        .unwrap()
        .snapshot();
    let identity = stats.clients[0].identity();
    let tls = identity.tls.expect("the consumer is over TLS");
    assert!(
        tls.version == "TLS1.3" || tls.version == "TLS1.2",
        "{tls:?}"
    );
    assert!(!tls.cipher_suite.is_empty());
    tb.shutdown().await;
}

#[tokio::test]
async fn tls_combines_with_snappy_and_with_deflate() {
    let pki = Pki::new();
    let tb = start_broker(|c| pki.configure(c)).await;
    for compression in [
        json!({ "snappy": true }),
        json!({ "deflate": true, "deflate_level": 3 }),
    ] {
        let (mut producer, reply) =
            tls_client(&tb, pki.client_config(None), compression.clone()).await;
        assert_eq!(reply["tls_v1"], true, "{compression}");
        assert!(
            producer.is_tls() && producer.is_compressed(),
            "{compression}"
        );
        let (mut consumer, _) = tls_client(&tb, pki.client_config(None), compression.clone()).await;
        let topic = if compression["snappy"] == true {
            "tls_snappy"
        } else {
            "tls_deflate"
        };
        round_trip(&mut producer, &mut consumer, topic).await;
    }
    tb.shutdown().await;
}

#[tokio::test]
async fn without_tls_configured_tls_v1_is_declined_and_the_client_stays_plain() {
    let tb = start_broker(|_| {}).await;
    let mut client = tb.connect().await;
    let reply = client
        .identify_ok(json!({ "feature_negotiation": true, "tls_v1": true }))
        .await
        .unwrap();
    assert_eq!(reply["tls_v1"], false);
    assert!(!client.is_tls());
    client.publish("t", "plain").await;
    tb.shutdown().await;
}

#[tokio::test]
async fn tls_required_refuses_every_command_but_identify_before_the_upgrade() {
    let pki = Pki::new();
    let tb = start_broker(|c| {
        pki.configure(c);
        c.tls_required = true;
    })
    .await;
    let mut plain = tb.connect().await;
    plain
        .send(&triage_protocol::Command::Pub {
            topic: "t".into(),
            body: Bytes::from("x"),
        })
        .await;
    let text = plain.expect_fatal(ErrorCode::Invalid).await;
    assert_eq!(text, "cannot PUB in current state (TLS required)");

    // IDENTIFY without tls_v1 is allowed, but SUB after it is not.
    let mut declined = tb.connect().await;
    declined
        .identify_ok(json!({ "feature_negotiation": true }))
        .await;
    declined
        .send(&triage_protocol::Command::Sub {
            topic: "t".into(),
            channel: "c".into(),
        })
        .await;
    let text = declined.expect_fatal(ErrorCode::Invalid).await;
    assert!(text.contains("TLS required"), "{text}");

    let (mut secure, _) = tls_client(&tb, pki.client_config(None), json!({})).await;
    secure.publish("t", "over tls").await;
    tb.shutdown().await;
}

/// Whether a TLS client with `identity` gets through IDENTIFY and a PUB.
async fn accepted(tb: &TestBroker, pki: &Pki, identity: Option<Identity>) -> bool {
    let mut client = tb.connect().await;
    let config = pki.client_config(identity);
    let request = json!({ "feature_negotiation": true, "tls_v1": true });
    let body = serde_json::to_vec(&request).unwrap();
    let mut command = b"IDENTIFY\n".to_vec();
    command.extend_from_slice(&(body.len() as u32).to_be_bytes());
    command.extend_from_slice(&body);
    client.send_raw(&command).await;
    let Frame::Response(reply) = client.read_frame().await else {
        return false;
    };
    let reply: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply["tls_v1"], true);
    // A refused certificate fails the handshake (TLS 1.2), or the broker
    // closes the connection right after it (TLS 1.3): no OK either way.
    client.tls = Some(config);
    if !client.try_tls_upgrade().await {
        return false;
    }
    client
        .try_send(&triage_protocol::Command::Pub {
            topic: "t".into(),
            body: Bytes::from("x"),
        })
        .await
        .is_ok()
        && matches!(
            client.read_within(common::READ_TIMEOUT).await,
            common::Read::Frame(Frame::Response(ok)) if ok == triage_protocol::OK
        )
}

#[tokio::test]
async fn require_verify_accepts_only_certificates_from_the_ca() {
    let pki = Pki::new();
    let tb = start_broker(|c| {
        pki.configure(c);
        c.tls_client_auth_policy = TlsClientAuthPolicy::RequireVerify;
    })
    .await;
    assert!(
        accepted(&tb, &pki, Some(pki.client())).await,
        "a CA-signed client"
    );
    assert!(!accepted(&tb, &pki, None).await, "no certificate");
    assert!(
        !accepted(&tb, &pki, Some(stranger())).await,
        "a stranger's certificate"
    );
    // The policy implies TLS: a plain client gets nowhere.
    let mut plain = tb.connect().await;
    plain.send(&triage_protocol::Command::Nop).await;
    plain.expect_fatal(ErrorCode::Invalid).await;
    tb.shutdown().await;
}

#[tokio::test]
async fn require_accepts_any_certificate_but_not_none() {
    let pki = Pki::new();
    let tb = start_broker(|c| {
        pki.configure(c);
        c.tls_client_auth_policy = TlsClientAuthPolicy::Require;
    })
    .await;
    assert!(
        accepted(&tb, &pki, Some(stranger())).await,
        "any certificate"
    );
    assert!(!accepted(&tb, &pki, None).await, "no certificate");
    tb.shutdown().await;
}

#[tokio::test]
async fn the_http_api_is_served_over_https_too() {
    let pki = Pki::new();
    let tb = start_broker(|c| {
        pki.configure(c);
        c.https_address = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let addr = tb.server.https_addr.expect("HTTPS is listening");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(pki.client_config(None))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.write_all(b"POST /pub?topic=https HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
        .await
        .unwrap();
    let mut reply = String::new();
    tokio::time::timeout(common::READ_TIMEOUT, tls.read_to_string(&mut reply))
        .await
        .unwrap()
        .ok();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("OK"), "{reply}");
    let mut consumer = tb.consumer("https", "c", 1).await;
    assert_eq!(body_str(&consumer.read_message().await), "hello");
    tb.shutdown().await;
}

#[tokio::test]
async fn unusable_certificate_files_stop_the_start_with_the_key_named() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig {
        tcp_address: "127.0.0.1:0".parse().unwrap(),
        http_address: "127.0.0.1:0".parse().unwrap(),
        data_path: data.path().to_path_buf(),
        ..BrokerConfig::default()
    };
    pki.configure(&mut config);
    config.tls_cert = Some(pki.path("missing.pem"));
    let err = triage_broker::Server::start(config.clone())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("tls_cert") && text.contains("missing.pem"),
        "{text}"
    );

    config.tls_cert = Some(pki.path("server.key")); // a key, not a certificate
    let text = triage_broker::Server::start(config)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("tls_cert") && text.contains("no certificate"),
        "{text}"
    );
}
