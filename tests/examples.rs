//! Every example runs against its own loopback server and prints what the
//! README says it does.

mod support;

use std::process::Command;
use support::example_bin;

fn run(name: &str, args: &[&str]) -> String {
    let out = Command::new(example_bin(name))
        .args(args)
        .output()
        .expect("run example");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
#[cfg(all(
    feature = "breaker",
    feature = "retry",
    feature = "context",
    feature = "cache"
))]
fn tour_shows_each_step() {
    let out = run("tour", &[]);
    for expected in [
        "GET /ok -> 200 OK",
        "classify: success",
        "(tower Elapsed: true); classify: retryable",
        "as a server response this is 504 Gateway Timeout",
        "GET /flaky -> 503 Service Unavailable; classify: retryable",
        "as a server response this is 502 Bad Gateway",
        "GET /report -> 504 Gateway Timeout",
        "call 3: 500 Internal Server Error; breaker now Open",
        "call 4: rejected at once: circuit breaker is open",
        "call 6: 200 OK; breaker now HalfOpen",
        "call 7: 200 OK; breaker now Closed",
        "upstream got PUT with 8 body bytes (call 3)",
        "PUT -> 200 OK after 3 attempts",
        "POST -> 503 Service Unavailable after 1 attempt",
        "retries so far: 2; refused by the retry budget: 0",
        "orders trace 4bf92f3577b34da6a3ce929d0e0e4736 span",
        "(parent 00f067aa0ba902b7)",
        "stock  got traceparent 00-4bf92f3577b34da6a3ce929d0e0e4736-",
        "from orders",
        "correlation checkout-77",
        "x-correlation-id checkout-77",
        "a new trace is started",
        "GET /catalogue -> 200 OK b\"catalogue v1\", x-cache MISS",
        "GET /catalogue -> 200 OK b\"catalogue v1\", x-cache HIT, age 0",
        "upstream calls so far: 2 (",
        "the upstream now fails; GET /catalogue -> 200 OK b\"catalogue v1\", x-cache STALE",
        "tour finished in",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}

#[test]
fn hyper_client_example() {
    let out = run("hyper_client", &[]);
    assert!(out.contains("GET /hello -> 200 OK b\"hello\""), "{out}");
    assert!(out.contains("POST /upper -> 200 OK b\"SHOUT\""), "{out}");
    assert!(
        out.contains("GET /stuck -> error: request timed out (timeout: true)"),
        "{out}"
    );
}

#[test]
fn axum_server_example() {
    let out = run("axum_server", &["--demo"]);
    assert!(out.contains("GET /api/hello -> 200 OK b\"hello\""), "{out}");
    assert!(
        out.contains("GET /api/slow -> 504 Gateway Timeout"),
        "{out}"
    );
    assert!(
        out.contains("GET /admin/slow -> 504 Gateway Timeout"),
        "{out}"
    );
    assert!(out.contains("GET /api/missing -> 404 Not Found"), "{out}");
}

#[test]
#[cfg(feature = "reqwest")]
fn reqwest_client_example() {
    let out = run("reqwest_client", &[]);
    assert!(
        out.contains("POST /count (1 MiB streamed) -> 200 OK b\"1048576 bytes in"),
        "{out}"
    );
    assert!(
        out.contains("GET /download -> 200 OK, 1048576 bytes streamed in"),
        "{out}"
    );
}

#[test]
#[cfg(feature = "otlp")]
fn otlp_example_exports_to_its_receiver() {
    let out = run("otlp", &[]);
    assert!(
        out.contains("GET /checkout -> 200 OK x-request-id="),
        "{out}"
    );
    // Two server spans and one client span, all in the caller's trace.
    let spans: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("received span"))
        .collect();
    assert_eq!(spans.len(), 3, "{out}");
    assert!(
        spans
            .iter()
            .all(|l| l.contains("trace=4bf92f3577b34da6a3ce929d0e0e4736")),
        "{out}"
    );
    assert_eq!(
        spans.iter().filter(|l| l.contains(" server ")).count(),
        2,
        "{out}"
    );
    assert!(
        spans.iter().any(|l| l.contains("parent=00f067aa0ba902b7")),
        "{out}"
    );
    assert!(
        out.contains("received metric http.server.request.duration"),
        "{out}"
    );
}
