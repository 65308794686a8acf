//! Transport security (issue 9): the server speaks TLS with its certificate, refuses
//! plaintext clients then, and with a client CA requires a client certificate (mTLS).
//! Certificates are made here, at test time, by a throw-away CA.

use std::error::Error as _;

use chrono::Utc;
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use spineledger::server::ServeSettings;
use spineledger_api::v1;
use spineledger_api::v1::treatment_plan_service_client::TreatmentPlanServiceClient;
use spineledger_auth::Role;
use spineledger_e2e::Harness;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, ServerTlsConfig};

/// A CA, and certificates it signs.
struct TestCa {
    certificate: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    fn new() -> Self {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let certificate = params.self_signed(&key).expect("CA");
        Self { certificate, key }
    }

    /// (certificate PEM, key PEM) for `names`, for a server or a client.
    fn issue(&self, names: &[&str], purpose: ExtendedKeyUsagePurpose) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(
            names
                .iter()
                .map(|name| (*name).to_owned())
                .collect::<Vec<_>>(),
        )
        .expect("params");
        params.extended_key_usages = vec![purpose];
        let certificate = params
            .signed_by(&key, &self.certificate, &self.key)
            .expect("signed");
        (certificate.pem(), key.serialize_pem())
    }

    fn pem(&self) -> String {
        self.certificate.pem()
    }
}

async fn tls_harness(ca: &TestCa, client_ca: Option<&TestCa>) -> Harness {
    let (cert, key) = ca.issue(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if let Some(client_ca) = client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(client_ca.pem()));
    }
    Harness::start_with_settings(
        Utc::now(),
        std::time::Duration::from_secs(30),
        ServeSettings {
            tls: Some(tls),
            ..ServeSettings::default()
        },
    )
    .await
}

async fn tls_channel(
    harness: &Harness,
    ca: &TestCa,
    identity: Option<(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.pem()))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://localhost:{}", harness.address().port()))
        .expect("endpoint")
        .tls_config(tls)?
        .connect()
        .await
}

/// A call that needs the token and reaches the store: NOT_FOUND for an unknown episode.
async fn plan_lookup(harness: &Harness, channel: Channel) -> Result<(), tonic::Status> {
    let clinic = harness.clinic();
    let mut plans = TreatmentPlanServiceClient::with_interceptor(
        channel,
        harness.bearer(Role::Integration, &[clinic]),
    );
    plans
        .get_treatment_plan(v1::GetTreatmentPlanRequest {
            clinic_id: clinic.to_string(),
            episode_id: uuid::Uuid::new_v4().to_string(),
            min_position: None,
        })
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_speaks_tls_and_refuses_plaintext_clients() {
    let ca = TestCa::new();
    let harness = tls_harness(&ca, None).await;
    let channel = tls_channel(&harness, &ca, None)
        .await
        .expect("TLS handshake");
    let status = plan_lookup(&harness, channel)
        .await
        .expect_err("no such plan");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");

    // A plaintext client gets no answer from a TLS server.
    let plain = harness.plain_channel().await;
    let status = plan_lookup(&harness, plain)
        .await
        .expect_err("plaintext refused");
    // A transport failure (hyper reports it as UNKNOWN, UNAVAILABLE, INTERNAL or
    // CANCELLED by how the connection ended), never the service's answer.
    assert!(status.source().is_some(), "a transport error: {status:?}");
    assert_ne!(status.code(), tonic::Code::NotFound, "{status:?}");

    // A client that does not trust the server's CA does not connect.
    let stranger = TestCa::new();
    let refused = match tls_channel(&harness, &stranger, None).await {
        Err(_) => true,
        Ok(channel) => plan_lookup(&harness, channel)
            .await
            .is_err_and(|status| status.code() != tonic::Code::NotFound),
    };
    assert!(
        refused,
        "a server certificate from an untrusted CA was accepted"
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_client_ca_the_server_requires_a_client_certificate_it_signed() {
    let ca = TestCa::new();
    let clients = TestCa::new();
    let harness = tls_harness(&ca, Some(&clients)).await;

    let certified = clients.issue(
        &["frontdesk.clinic.example"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let channel = tls_channel(&harness, &ca, Some(certified))
        .await
        .expect("mutual TLS handshake");
    let status = plan_lookup(&harness, channel)
        .await
        .expect_err("no such plan");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");

    // Without a client certificate, or with one from another CA: no service.
    let impostor = TestCa::new().issue(
        &["frontdesk.clinic.example"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    for identity in [None, Some(impostor)] {
        let described = if identity.is_some() {
            "a foreign client certificate"
        } else {
            "no client certificate"
        };
        let served = match tls_channel(&harness, &ca, identity).await {
            Err(_) => false,
            Ok(channel) => plan_lookup(&harness, channel)
                .await
                .is_err_and(|status| status.code() == tonic::Code::NotFound),
        };
        assert!(!served, "served with {described}");
    }
    harness.stop().await;
}
