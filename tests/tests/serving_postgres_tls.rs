//! Serving tables in PostgreSQL over TLS, against a real PostgreSQL with `ssl = on`
//! whose pg_hba.conf takes TCP connections over TLS only, with a password: rows written
//! and read through `sslmode=verify-full` with the right CA; a wrong CA, a certificate
//! for another host name, and plaintext (`sslmode=disable`) refused with the error the
//! user reads in the host's log and the API, nothing written; `sslmode=require`
//! encrypting without checking the certificate; `sslmode=verify-ca` taking a
//! certificate for another name; `sluice validate` reading the CA file.

mod harness;

use std::path::{Path, PathBuf};
use std::process::Command;

use harness::postgres::Postgres;
use harness::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A certificate authority made for one test, its certificate written to `dir/NAME.pem`.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    file: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let file = dir.join(format!("{name}.pem"));
        std::fs::write(&file, issuer.pem()).unwrap();
        Ca { issuer, file }
    }

    /// A server certificate for `names` (DNS names or IP addresses) and its key, as PEM.
    fn server(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "sluice test PostgreSQL");
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A TLS-only PostgreSQL serving a certificate for 127.0.0.1 from `ca`.
fn server_for_loopback(ca: &Ca) -> Postgres {
    let (cert, key) = ca.server(&["127.0.0.1"]);
    Postgres::start_tls(&cert, &key)
}

/// A host whose HTTP ingest feeds table `readings` in PostgreSQL through `connection`.
/// A POST waits 2 s for delivery, so that a refused write answers 503 soon.
fn host(connection: &str) -> (Pipeline, u16) {
    let ingest = free_port();
    let pipeline = Pipeline::start(&format!(
        r#"
[sources.ingest]
type = "http"
listen = "127.0.0.1:{ingest}"
delivery_timeout_ms = 2000

[sinks.latest]
type = "serving"
inputs = ["ingest"]
table = "readings"
key = "device_id"
public = true
postgres = "{connection}"
"#
    ));
    (pipeline, ingest)
}

fn post_readings(ingest: u16, count: u64) -> (u16, String) {
    let lines: Vec<String> = (0..count)
        .map(|n| format!(r#"{{"device_id":"dev-{n:03}","n":{n}}}"#))
        .collect();
    http_post(ingest, "/ingest", &[], lines.join("\n").as_bytes())
}

fn get(api: u16, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = http_get(api, path).expect("the API answers");
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// Rows of the table, and whether the host's connections to the server use TLS.
fn stored_over_tls(postgres: &Postgres) -> (String, String) {
    let rows = postgres.query("SELECT count(*) FROM sluice_serving_readings");
    let tls = postgres.query(
        "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.client_addr IS NOT NULL",
    );
    (rows, tls)
}

/// Rows are written and served through `connection`, over TLS.
fn writes_and_reads_through(postgres: &Postgres, connection: &str) {
    let (pipeline, ingest) = host(connection);
    let (status, answer) = post_readings(ingest, 50);
    assert_eq!(status, 200, "{answer}\n{}", pipeline.host.log_text());
    assert_eq!(stored_over_tls(postgres), ("50".into(), "t".into()));
    let (status, body) = get(pipeline.host.api_port, "/v1/tables/readings/keys/dev-042");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["values"][0]["value"]["n"], 42, "{body}");
}

/// Writes through `connection` are refused: the POST times out (503), the host's log
/// and the API's error say why (`expected`), and the server has no table.
fn refused_with(postgres: &Postgres, connection: &str, expected: &[&str]) {
    let (pipeline, ingest) = host(connection);
    let (status, answer) = post_readings(ingest, 5);
    assert_eq!(status, 503, "{answer}");
    let log = pipeline.host.log_text();
    let warning = log
        .lines()
        .find(|line| line.contains("write failed"))
        .unwrap_or_else(|| panic!("no failed write in the log:\n{log}"));
    assert!(warning.contains("latest"), "the stage is named: {warning}");
    let prefix = "serving table `readings`: cannot connect to PostgreSQL";
    for text in std::iter::once(&prefix).chain(expected) {
        assert!(warning.contains(text), "`{text}` in: {warning}");
    }
    let (status, body) = get(pipeline.host.api_port, "/v1/tables/readings/keys/dev-001");
    assert_eq!(status, 500, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    for text in std::iter::once(&prefix).chain(expected) {
        assert!(error.contains(text), "`{text}` in the API's error: {body}");
    }
    assert_eq!(
        postgres.query("SELECT to_regclass('sluice_serving_readings') IS NULL"),
        "t",
        "nothing reached the server"
    );
}

#[test]
fn verify_full_with_the_right_ca_writes_and_serves_rows_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let postgres = server_for_loopback(&ca);
    let connection = format!(
        "{} sslmode=verify-full sslrootcert={}",
        postgres.connection(),
        ca.file.display()
    );
    writes_and_reads_through(&postgres, &connection);
}

#[test]
fn the_url_form_carries_sslmode_and_sslrootcert() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let postgres = server_for_loopback(&ca);
    let connection = format!(
        "postgresql://postgres:{}@127.0.0.1:{}/postgres?sslmode=verify-full&sslrootcert={}",
        harness::postgres::PASSWORD,
        postgres.port,
        ca.file.display()
    );
    writes_and_reads_through(&postgres, &connection);
}

#[test]
fn a_server_certificate_from_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, other) = (Ca::new(dir.path(), "ca"), Ca::new(dir.path(), "other-ca"));
    let postgres = server_for_loopback(&ca);
    let connection = format!(
        "{} sslmode=verify-full sslrootcert={}",
        postgres.connection(),
        other.file.display()
    );
    refused_with(
        &postgres,
        &connection,
        &[
            &format!("sslmode=verify-full, sslrootcert={}", other.file.display()),
            "error performing TLS handshake: invalid peer certificate: UnknownIssuer \
             (the server's certificate is not from a CA in `sslrootcert`)",
        ],
    );
}

#[test]
fn verify_full_refuses_a_certificate_for_another_host_name_which_verify_ca_takes() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let (cert, key) = ca.server(&["db.example.internal"]);
    let postgres = Postgres::start_tls(&cert, &key);
    let with_mode = |mode: &str| {
        format!(
            "{} sslmode={mode} sslrootcert={}",
            postgres.connection(),
            ca.file.display()
        )
    };
    refused_with(
        &postgres,
        &with_mode("verify-full"),
        &[
            "invalid peer certificate: certificate not valid for name",
            "db.example.internal",
        ],
    );
    // The chain is right: only the name is wrong.
    writes_and_reads_through(&postgres, &with_mode("verify-ca"));
}

#[test]
fn require_encrypts_without_checking_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    // A CA the host knows nothing of.
    let ca = Ca::new(dir.path(), "unknown-ca");
    let postgres = server_for_loopback(&ca);
    let connection = format!("{} sslmode=require", postgres.connection());
    writes_and_reads_through(&postgres, &connection);
}

#[test]
fn a_tls_only_server_refuses_sslmode_disable() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let postgres = server_for_loopback(&ca);
    let connection = format!("{} sslmode=disable", postgres.connection());
    refused_with(
        &postgres,
        &connection,
        &[
            "(sslmode=disable)",
            "no pg_hba.conf entry for host \"127.0.0.1\"",
            "no encryption",
        ],
    );
}

/// `sluice validate` on a config whose serving sink has `postgres = connection`: its
/// exit status and what it prints.
fn validate(dir: &Path, connection: &str) -> (bool, String) {
    let config = dir.join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[api]\nlisten = \"127.0.0.1:{}\"\n\
             [sources.ingest]\ntype = \"http\"\nlisten = \"127.0.0.1:{}\"\n\
             [sinks.latest]\ntype = \"serving\"\ninputs = [\"ingest\"]\ntable = \"readings\"\n\
             key = \"device_id\"\npublic = true\npostgres = \"{connection}\"\n",
            dir.join("data").display(),
            free_port(),
            free_port()
        ),
    )
    .unwrap();
    let output = Command::new(sluice_binary())
        .arg("validate")
        .arg(&config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn validate_reads_the_ca_file_and_names_the_stage_and_key_of_a_bad_value() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let base = "host=db.example.internal user=sluice dbname=serving";
    let (ok, text) = validate(
        dir.path(),
        &format!(
            "{base} sslmode=verify-full sslrootcert={}",
            ca.file.display()
        ),
    );
    assert!(ok, "{text}");

    let missing = dir.path().join("missing.pem");
    let (ok, text) = validate(
        dir.path(),
        &format!(
            "{base} sslmode=verify-full sslrootcert={}",
            missing.display()
        ),
    );
    assert!(!ok, "{text}");
    let expected = format!(
        "stage `latest`: table `readings`: `postgres`: `sslrootcert`: cannot read {}",
        missing.display()
    );
    assert!(text.contains(&expected), "{text}");

    let (ok, text) = validate(dir.path(), &format!("{base} sslmode=verify-fulll"));
    assert!(!ok, "{text}");
    assert!(
        text.contains(
            "stage `latest`: table `readings`: `postgres`: `sslmode` `verify-fulll` is not one of"
        ),
        "{text}"
    );

    let (ok, text) = validate(dir.path(), &format!("{base} sslmode=verify-ca"));
    assert!(!ok, "{text}");
    assert!(
        text.contains("`sslmode=verify-ca` checks the server's certificate against a CA"),
        "{text}"
    );
}
