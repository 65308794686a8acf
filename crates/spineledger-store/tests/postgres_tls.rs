//! TLS to PostgreSQL with libpq's sslmode semantics, against the test server (which must
//! offer TLS, as a Debian PostgreSQL does with its snakeoil certificate for `localhost`).
//!
//! One test, in a process of its own: trusting a CA is process-wide, so the steps without
//! a CA run first and the verify-full steps after.

use spineledger_store::tokio_postgres::config::Host;
use spineledger_store::{StoreError, connect, parse_url, resolve, tls};

/// The whole chain of an error, for matching on its cause.
fn chain(error: &StoreError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Whether the connection of `url` runs over TLS, as the server sees it.
async fn encrypted(url: &str) -> Result<bool, StoreError> {
    let client = connect(&parse_url(url)?).await?;
    let row = client
        .query_one(
            "SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

#[tokio::test]
async fn sslmode_disable_prefer_require_and_verify_full_behave_as_in_libpq() {
    let url = std::env::var("SPINELEDGER_TEST_DATABASE_URL").ok();
    let server = resolve(url.as_deref())
        .await
        .unwrap_or_else(|error| panic!("tests need a running PostgreSQL: {error}"));
    let user = server.get_user().unwrap_or("postgres").to_owned();
    let port = server.get_ports().first().copied().unwrap_or(5432);
    let host = match server.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let at = |parameters: &str| format!("postgres://{user}@{host}:{port}/postgres?{parameters}");

    // The server must offer TLS for this test to mean anything: say so loudly if not.
    let plain = connect(&parse_url(&at("sslmode=disable")).expect("url"))
        .await
        .expect("connect");
    let offered: String = plain.query_one("SHOW ssl", &[]).await.expect("ssl").get(0);
    assert_eq!(
        offered, "on",
        "the test PostgreSQL server does not offer TLS (ssl = off)"
    );
    let certificate: String = plain
        .query_one("SHOW ssl_cert_file", &[])
        .await
        .expect("certificate")
        .get(0);

    assert!(!encrypted(&at("sslmode=disable")).await.expect("disable"));
    assert!(encrypted(&at("sslmode=prefer")).await.expect("prefer"));
    assert!(encrypted(&at("sslmode=require")).await.expect("require"));

    // verify-full cannot run without the CA that issued the server's certificate.
    assert!(matches!(
        parse_url(&at("sslmode=verify-full")),
        Err(StoreError::Configuration(_))
    ));

    // With the server's (self-signed) certificate as the CA: the name must match too.
    // The certificate names `localhost`; connect there by address, verify by name.
    tls::trust_server_ca(std::path::Path::new(&certificate)).expect("CA");
    let named = format!(
        "host=localhost hostaddr=127.0.0.1 port={port} user={user} dbname=postgres \
         sslmode=verify-full"
    );
    assert!(encrypted(&named).await.expect("verified by name"));
    // The same server reached as 127.0.0.1: the certificate does not name it.
    let refused = encrypted(&at("sslmode=verify-full"))
        .await
        .expect_err("a certificate for another name was accepted");
    assert!(
        chain(&refused).contains("certificate"),
        "{}",
        chain(&refused)
    );
    // Once a CA is configured, require and prefer verify too, and prefer no longer falls
    // back to plaintext.
    for mode in ["sslmode=require", "sslmode=prefer"] {
        let refused = encrypted(&at(mode)).await.expect_err(mode);
        assert!(
            chain(&refused).contains("certificate"),
            "{mode}: {}",
            chain(&refused)
        );
    }
    assert!(!encrypted(&at("sslmode=disable")).await.expect("disable"));
}
