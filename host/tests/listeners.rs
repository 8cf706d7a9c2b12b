//! The API's and HTTP ingest's listeners as a client sees them: HTTPS (HTTP/1.1 and
//! HTTP/2) with certificates renewed from their files, the admin token, the secure
//! defaults `validate` enforces, and the limits that keep slow or greedy clients from
//! holding the server (`hardening`).

#[path = "listeners/hardening.rs"]
mod hardening;
#[path = "listeners/support.rs"]
#[allow(dead_code)]
mod support;

use std::time::Duration;

use support::*;

/// An API with TLS and an admin token, and a TLS ingest with a token into a file.
fn tls_host(api: std::net::SocketAddr, ingest: std::net::SocketAddr, tls: &str) -> String {
    format!(
        r#"
[api]
listen = "{api}"
admin_token = "admin-secret"
{tls}

[sources.in]
type = "http"
listen = "{ingest}"
token = "ingest-secret"
{tls}

[sinks.out]
type = "file"
inputs = ["in"]
path = "out"
"#
    )
}

#[tokio::test]
async fn https_with_the_ca_serves_http1_and_http2_on_the_api_and_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let tls = ca.server("server").write(dir.path());
    let (api, ingest) = (free_port(), free_port());
    let host = start(dir.path(), &tls_host(api, ingest, &tls)).await;
    for alpn in [&b"h2"[..], b"http/1.1"] {
        let health = https(api, ca.roots(), alpn, "GET", "/health", &[], "")
            .await
            .unwrap();
        assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
        assert_eq!(
            health.alpn.as_deref(),
            Some(alpn),
            "the protocol ALPN chose"
        );
        let posted = https(
            ingest,
            ca.roots(),
            alpn,
            "POST",
            "/ingest",
            &[("authorization", "Bearer ingest-secret")],
            "{\"a\":1}\n{\"a\":2}\n",
        )
        .await
        .unwrap();
        assert_eq!(posted.status, 200, "{}", posted.body);
        assert_eq!(posted.body, "{\"accepted\":2}");
        assert_eq!(posted.alpn.as_deref(), Some(alpn));
        let without = https(ingest, ca.roots(), alpn, "POST", "/ingest", &[], "{}")
            .await
            .unwrap();
        assert_eq!(without.status, 401, "{}", without.body);
    }
    host.drain().await.unwrap();
}

#[tokio::test]
async fn plaintext_and_another_ca_are_refused_by_a_tls_port() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let tls = ca.server("server").write(dir.path());
    let (api, ingest) = (free_port(), free_port());
    let host = start(dir.path(), &tls_host(api, ingest, &tls)).await;
    for port in [api, ingest] {
        let answer = raw(port, "GET /health HTTP/1.1\r\nhost: test\r\n\r\n").await;
        assert!(
            !answer.starts_with("HTTP/"),
            "plain HTTP is not answered: {answer:?}"
        );
        let stranger = Ca::new("another CA");
        let failure = https(port, stranger.roots(), b"h2", "GET", "/health", &[], "")
            .await
            .err()
            .expect("a client trusting another CA refuses the server");
        assert!(
            failure.to_string().contains("UnknownIssuer"),
            "the client names why: {failure}"
        );
    }
    // The listener goes on serving the clients that trust its CA.
    let health = https(api, ca.roots(), b"h2", "GET", "/health", &[], "")
        .await
        .unwrap();
    assert_eq!(health.status, 200);
    host.drain().await.unwrap();
}

#[tokio::test]
async fn replaced_certificate_files_are_presented_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test CA");
    let first = ca.server("first");
    let tls = first.write(dir.path());
    let (api, ingest) = (free_port(), free_port());
    let host = start(dir.path(), &tls_host(api, ingest, &tls)).await;
    let presented = |port| {
        let roots = ca.roots();
        async move {
            https(port, roots, b"h2", "GET", "/health", &[], "")
                .await
                .unwrap()
                .certificate
        }
    };
    assert_eq!(presented(api).await, first.der);
    assert_eq!(presented(ingest).await, first.der);

    let second = ca.server("second");
    second.write(dir.path());
    // Handshakes look at the files at most once a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for port in [api, ingest] {
        // The handshake that notices the change may still present the old pair.
        let _ = presented(port).await;
        assert_eq!(
            presented(port).await,
            second.der,
            "the new pair, no restart"
        );
    }

    // A broken pair is refused and the one in use kept.
    std::fs::write(dir.path().join("server.crt"), "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for port in [api, ingest] {
        let _ = presented(port).await;
        assert_eq!(presented(port).await, second.der, "the last good pair");
    }
    host.drain().await.unwrap();
}

#[tokio::test]
async fn the_admin_routes_need_the_admin_token_and_metrics_take_the_metrics_token() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("group.toml"), "").unwrap();
    let (api, ingest) = (free_port(), free_port());
    let text = format!(
        r#"
[api]
listen = "{api}"
admin_token = "admin-secret"
metrics_token = "scrape-secret"

[fleet]
groups.all = {{ config = "group.toml" }}
devices.d1 = {{ group = "all", token = "device-secret" }}

[sources.in]
type = "http"
listen = "{ingest}"

[sinks.out]
type = "file"
inputs = ["in"]
path = "out"
"#
    );
    let host = start(dir.path(), &text).await;
    let bearer = |token: &str| format!("authorization: Bearer {token}\r\n");
    for path in [
        "/admin",
        "/v1/admin/overview",
        "/fleet/v1/devices",
        "/metrics",
    ] {
        let (status, body) = http(api, "GET", path, "").await;
        assert_eq!(status, 401, "{path} without a token: {body}");
        assert!(body.contains("admin token is needed"), "{body}");
        assert_eq!(
            http(api, "GET", path, &bearer("admin-secret")).await.0,
            200,
            "{path}"
        );
        assert_eq!(
            http(api, "GET", path, &bearer("wrong")).await.0,
            403,
            "{path}"
        );
    }
    // Prometheus's token reads the metrics and nothing else.
    assert_eq!(
        http(api, "GET", "/metrics", &bearer("scrape-secret"))
            .await
            .0,
        200
    );
    assert_eq!(
        http(api, "GET", "/admin", &bearer("scrape-secret")).await.0,
        403
    );
    // A browser opening the admin page gives the token as its Basic password.
    let basic = "authorization: Basic YWRtaW46YWRtaW4tc2VjcmV0\r\n"; // admin:admin-secret
    assert_eq!(http(api, "GET", "/admin", basic).await.0, 200);
    // Probes and the devices' own routes do not take the admin token.
    assert_eq!(http(api, "GET", "/health", "").await.0, 200);
    assert_eq!(
        http(api, "GET", "/fleet/v1/release", &bearer("device-secret"))
            .await
            .0,
        200
    );
    host.drain().await.unwrap();
}

#[test]
fn the_former_fleet_admin_token_stands_for_the_apis() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("group.toml"), "").unwrap();
    let fleet = "[fleet]\nadmin_token = \"old\"\ngroups.all = { config = \"group.toml\" }\ndevices.d1 = { group = \"all\", token = \"t\" }\n";
    let config = config(
        dir.path(),
        &format!("[api]\nlisten = \"127.0.0.1:1\"\n{fleet}"),
    );
    assert!(config.api.unwrap().admin_token.is_some());
    let both = format!("[api]\nlisten = \"127.0.0.1:1\"\nadmin_token = \"new\"\n{fleet}");
    let report = refused(dir.path(), &both);
    assert!(
        report.contains("`[fleet] admin_token` and `[api] admin_token` are both set")
            && report.contains("refused.toml:5:"),
        "{report}"
    );
}

#[test]
fn empty_tokens_and_tables_without_read_tokens_are_refused_at_validation() {
    let dir = tempfile::tempdir().unwrap();
    let report = refused(
        dir.path(),
        "[api]\nlisten = \"127.0.0.1:1\"\nadmin_token = \"${UNSET_ADMIN_TOKEN:-}\"\n",
    );
    assert!(
        report.contains("refused.toml:3:") && report.contains("a token cannot be empty"),
        "{report}"
    );

    let table = |access: &str| {
        format!(
            "[sources.in]\ntype = \"http\"\nlisten = \"127.0.0.1:1\"\n[sinks.t]\ntype = \"serving\"\ninputs = [\"in\"]\ntable = \"latest\"\nkey = \"id\"\n{access}"
        )
    };
    let report = refused(dir.path(), &table(""));
    assert!(
        report.contains("refused.toml:4:")
            && report.contains("stage `t`: table `latest` has no `read_tokens`")
            && report.contains("`public = true`"),
        "{report}"
    );
    config(dir.path(), &table("public = true\n"));
    config(dir.path(), &table("read_tokens = [\"reader\"]\n"));
}

#[tokio::test]
async fn a_listener_other_machines_reach_needs_tls_and_a_token_or_says_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let ingest = free_port().port();
    let api = free_port().port();
    let plain = format!(
        "[api]\nlisten = \"0.0.0.0:{api}\"\n\n[sources.in]\ntype = \"http\"\nlisten = \"0.0.0.0:{ingest}\"\n[sinks.out]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"out\"\n"
    );
    let report = refused(dir.path(), &plain);
    for expected in [
        "refused.toml:2:10\n".to_owned(),
        format!(
            "the API (`[api]`) listens on 0.0.0.0:{api}, which other machines reach, without TLS"
        ),
        format!(
            "the API (`[api]`) listens on 0.0.0.0:{api}, which other machines reach, without `admin_token`"
        ),
        "refused.toml:6:10\n".to_owned(),
        format!("stage `in` listens on 0.0.0.0:{ingest}, which other machines reach, without TLS"),
        format!(
            "stage `in` listens on 0.0.0.0:{ingest}, which other machines reach, without `token`"
        ),
        "or `insecure = true`".to_owned(),
    ] {
        assert!(report.contains(&expected), "{expected:?} in:\n{report}");
    }
    assert!(report.contains("4 problem(s)"), "{report}");

    // With TLS and tokens it starts; so does plain HTTP that says `insecure = true`.
    let ca = Ca::new("test CA");
    let tls = ca.server("server").write(dir.path());
    let secured = plain
        .replace(
            "\n\n[sources",
            &format!("\nadmin_token = \"a\"\n{tls}\n\n[sources"),
        )
        .replace("\n[sinks", &format!("\ntoken = \"t\"\n{tls}\n[sinks"));
    start(dir.path(), &secured).await.drain().await.unwrap();
    let insecure = plain
        .replace("\n\n[sources", "\ninsecure = true\n\n[sources")
        .replace("\n[sinks", "\ninsecure = true\n[sinks");
    let host = start(dir.path(), &insecure).await;
    let local = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(http(local(api), "GET", "/admin", "").await.0, 200);
    let posted = raw(
        local(ingest),
        "POST /ingest HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
    )
    .await;
    assert!(posted.starts_with("HTTP/1.1 200"), "{posted}");
    host.drain().await.unwrap();
}
