use super::id::{visible_ascii, V7State};
use super::*;
use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use std::time::{SystemTime, UNIX_EPOCH};

const VALID: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap()
}

#[test]
fn traceparent_valid_and_round_trips() {
    let tp = TraceParent::parse(VALID.as_bytes()).unwrap();
    assert_eq!(tp.to_string(), VALID);
    assert!(tp.flags.is_sampled());
    let unsampled =
        TraceParent::parse(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00").unwrap();
    assert!(!unsampled.flags.is_sampled());
    // Optional whitespace around the value is allowed.
    assert!(TraceParent::parse(format!(" \t{VALID} ").as_bytes()).is_ok());
}

#[test]
fn traceparent_invalid_variants_of_the_recommendation() {
    use TraceParentError::*;
    let cases: &[(&str, TraceParentError)] = &[
        ("", Length),
        ("00", Length),
        // One character short and one too long for version 00.
        (
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0",
            Length,
        ),
        (
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-010",
            Length,
        ),
        (
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-",
            Length,
        ),
        // Version ff and a non-hex version.
        (
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ForbiddenVersion,
        ),
        (
            "0g-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            NotLowerHex,
        ),
        (
            "0A-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            NotLowerHex,
        ),
        // Uppercase hex in each field.
        (
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            NotLowerHex,
        ),
        (
            "00-0af7651916cd43dd8448eb211c80319c-B7AD6B7169203331-01",
            NotLowerHex,
        ),
        (
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0A",
            NotLowerHex,
        ),
        // Non-hex characters.
        (
            "00-0af7651916cd43dd8448eb211c80319z-b7ad6b7169203331-01",
            NotLowerHex,
        ),
        (
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333.-01",
            NotLowerHex,
        ),
        // Wrong delimiters.
        (
            "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            Delimiter,
        ),
        (
            "00-0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331-01",
            Delimiter,
        ),
        (
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331_01",
            Delimiter,
        ),
        // Fields of the wrong length, total length kept.
        (
            "00-0af7651916cd43dd8448eb211c80319-cb7ad6b7169203331-01",
            Delimiter,
        ),
        // All-zero IDs.
        (
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            ZeroTraceId,
        ),
        (
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            ZeroParentId,
        ),
        // A future version with extra data not after a '-'.
        (
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",
            Delimiter,
        ),
    ];
    for (input, want) in cases {
        assert_eq!(
            TraceParent::parse(input.as_bytes()),
            Err(*want),
            "{input:?}"
        );
    }
}

#[test]
fn traceparent_future_versions_are_read_and_sent_as_00() {
    let tp = TraceParent::parse(
        b"cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-the-future-holds",
    )
    .unwrap();
    assert_eq!(tp.to_string(), VALID);
    let tp =
        TraceParent::parse(b"01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
    assert_eq!(tp.to_string(), VALID);
    // Unknown flag bits are cleared; sampled and random are kept.
    let tp =
        TraceParent::parse(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-ff").unwrap();
    assert_eq!(tp.flags.bits(), 0x03);
}

fn ts(values: &[&str]) -> Result<Option<HeaderValue>, TraceStateError> {
    let values: Vec<_> = values.iter().map(|v| hv(v)).collect();
    parse_tracestate(&values)
}

#[test]
fn tracestate_rules() {
    assert_eq!(
        ts(&["rojo=00f067aa0ba902b7"]).unwrap().unwrap(),
        "rojo=00f067aa0ba902b7"
    );
    // Several headers are one list; whitespace and empty members go.
    assert_eq!(
        ts(&["rojo=1 ,, ", " congo=2", "a@b=3"]).unwrap().unwrap(),
        "rojo=1,congo=2,a@b=3"
    );
    assert_eq!(ts(&[" , "]).unwrap(), None);
    // Level 2 keys: a lowercase letter or a digit first, then keychars,
    // `@` among them anywhere; no tenant@system limits.
    assert!(ts(&["1tenant@sys=v"]).unwrap().is_some());
    assert!(ts(&["tenant@1sys=v"]).unwrap().is_some());
    assert!(ts(&["tenant@systemnamelongerthanfourteen=v"])
        .unwrap()
        .is_some());
    assert!(ts(&["1key=v"]).unwrap().is_some());
    let long_tenant = format!("{}@s=v", "t".repeat(250));
    assert!(ts(&[&long_tenant]).unwrap().is_some());
    // An invalid member goes alone; the valid ones stay.
    assert_eq!(ts(&["Upper=v"]), Ok(None));
    assert_eq!(ts(&["Upper=v,rojo=1"]).unwrap().unwrap(), "rojo=1");
    assert_eq!(ts(&["novalue,rojo=1"]).unwrap().unwrap(), "rojo=1");
    assert_eq!(ts(&["rojo=1,k="]).unwrap().unwrap(), "rojo=1");
    assert_eq!(ts(&["k=a=b,rojo=1"]).unwrap().unwrap(), "rojo=1");
    assert_eq!(ts(&["_k=1,rojo=1"]).unwrap().unwrap(), "rojo=1");
    // Spaces inside a value are allowed; around a member they are OWS.
    assert_eq!(ts(&["k=in side "]).unwrap().unwrap(), "k=in side");
    // Of members with the same key, the first is kept.
    assert_eq!(ts(&["a=1,a=2"]).unwrap().unwrap(), "a=1");
    assert_eq!(ts(&["a=1", "b=3,a=2"]).unwrap().unwrap(), "a=1,b=3");
    let k = format!("k{}=v", "a".repeat(256));
    assert_eq!(ts(&[&k]), Ok(None));
    let v = format!("k={}", "v".repeat(257));
    assert_eq!(ts(&[&v]), Ok(None));
    // 32 members pass, 33 do not.
    let list = |n: usize| {
        (0..n)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",")
    };
    assert!(ts(&[&list(32)]).unwrap().is_some());
    assert_eq!(ts(&[&list(33)]), Err(TraceStateError::TooManyMembers));
}

#[test]
fn tracestate_non_ascii_is_rejected() {
    let v = HeaderValue::from_bytes(b"k=caf\xc3\xa9,rojo=1").unwrap();
    assert_eq!(parse_tracestate([&v]).unwrap().unwrap(), "rojo=1");
}

#[test]
fn tracestate_longer_than_512_is_cut_long_members_first() {
    let long = format!("big={}", "x".repeat(200));
    let small: Vec<String> = (0..30)
        .map(|i| format!("k{i:02}={}", "y".repeat(10)))
        .collect();
    let mut all = vec![small[0].clone(), long];
    all.extend(small[1..].iter().cloned());
    let out = ts(&[&all.join(",")]).unwrap().unwrap();
    let out = out.to_str().unwrap();
    assert!(out.len() <= TRACESTATE_MAX_LEN, "{}", out.len());
    assert!(!out.contains("big="));
    assert!(out.starts_with("k00="));
    // Only whole members.
    for m in out.split(',') {
        assert_eq!(m.len(), 14, "{m}");
    }
}

#[test]
fn baggage_rules() {
    let b = |v: &str| Baggage::parse([&hv(v)]).map(|b| b.as_str().to_owned());
    assert_eq!(b("userId=alice").as_deref(), Some("userId=alice"));
    assert_eq!(
        b("a = 1 ; p ; q = 2 , b=2").as_deref(),
        Some("a=1;p;q=2,b=2")
    );
    assert_eq!(b("bad key=1,ok=2").as_deref(), Some("ok=2"));
    assert_eq!(b("k=\"quoted\"").as_deref(), None);
    assert_eq!(b("k=a\\b").as_deref(), None);
    assert_eq!(b("k=v;bad prop").as_deref(), None);
    assert_eq!(b("=v").as_deref(), None);
    assert_eq!(b("k=").as_deref(), Some("k="));
    // Members beyond 64 are dropped whole.
    let many = (0..70)
        .map(|i| format!("k{i}=v"))
        .collect::<Vec<_>>()
        .join(",");
    let out = b(&many).unwrap();
    assert_eq!(out.split(',').count(), BAGGAGE_MAX_MEMBERS);
    // Beyond 8192 bytes, whole members are dropped.
    let big = (0..5)
        .map(|i| format!("k{i}={}", "v".repeat(3000)))
        .collect::<Vec<_>>()
        .join(",");
    let out = b(&big).unwrap();
    assert_eq!(out.split(',').count(), 2);
    // Several headers are one list.
    let two = Baggage::parse([&hv("a=1"), &hv("b=2")]).unwrap();
    assert_eq!(two.as_str(), "a=1,b=2");
    assert_eq!(two.get("b"), Some("2"));
}

fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_bytes(v).unwrap(),
        );
    }
    h
}

#[test]
fn context_continues_a_valid_trace_and_restarts_an_invalid_one() {
    let config = Config::new();
    let cx = Context::from_headers(
        &headers(&[("traceparent", VALID.as_bytes()), ("tracestate", b"a=1")]),
        &config,
    );
    assert_eq!(
        cx.trace_id().to_string(),
        "0af7651916cd43dd8448eb211c80319c"
    );
    assert_eq!(cx.tracestate().unwrap(), "a=1");
    assert_ne!(cx.span_id().to_string(), "b7ad6b7169203331");

    // An invalid traceparent: a new trace, and tracestate is not read.
    let bad = Context::from_headers(
        &headers(&[
            (
                "traceparent",
                b"00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            ),
            ("tracestate", b"a=1"),
        ]),
        &config,
    );
    assert_ne!(bad.trace_id(), cx.trace_id());
    assert!(bad.parent_id().is_none());
    assert!(bad.tracestate().is_none());

    // Two traceparent headers are invalid.
    let dup = Context::from_headers(
        &headers(&[
            ("traceparent", VALID.as_bytes()),
            ("traceparent", VALID.as_bytes()),
        ]),
        &config,
    );
    assert!(dup.parent_id().is_none());
}

#[test]
fn ids_are_taken_when_trusted_and_valid() {
    let trusting = Config::new().request_id_alias("x-trace-id").unwrap();
    let h = headers(&[("x-trace-id", b"abc-123"), ("x-correlation-id", b"corr-1")]);
    let cx = Context::from_headers(&h, &trusting);
    assert_eq!(cx.request_id(), "abc-123");
    assert_eq!(cx.correlation_id(), "corr-1");

    let wary = Config::new().trust_incoming_ids(false);
    let cx = Context::from_headers(&h, &wary);
    assert_eq!(cx.request_id().len(), 36);
    assert_eq!(cx.correlation_id(), cx.request_id());

    // Invalid IDs (spaces, non-ASCII, too long, repeated) are replaced.
    for bad in [&b"has space"[..], b"caf\xc3\xa9", &[b'a'; MAX_ID_LEN + 1]] {
        let cx = Context::from_headers(&headers(&[("x-request-id", bad)]), &Config::new());
        assert_eq!(cx.request_id().len(), 36, "{bad:?}");
    }
    let cx = Context::from_headers(
        &headers(&[("x-request-id", b"a"), ("x-request-id", b"b")]),
        &Config::new(),
    );
    assert_eq!(cx.request_id().len(), 36);
}

#[test]
fn request_ids_are_uuid_v7_and_ordered() {
    let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let ids: Vec<uuid::Uuid> = (0..10_000)
        .map(|_| {
            let id = new_request_id();
            let text = id.to_str().unwrap();
            let parsed = uuid::Uuid::parse_str(text).unwrap();
            // The canonical text, lowercase and hyphenated.
            assert_eq!(parsed.hyphenated().to_string(), text);
            parsed
        })
        .collect();
    let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    for pair in ids.windows(2) {
        assert!(pair[0] < pair[1], "{} then {}", pair[0], pair[1]);
    }
    for id in &ids {
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
        let ms = u128::from(secs) * 1000 + u128::from(nanos / 1_000_000);
        // A counter overflow may borrow a millisecond or two, never more.
        assert!(ms >= before.as_millis() && ms <= after.as_millis() + 2);
    }
}

#[test]
fn request_id_counter_follows_the_rfc() {
    let start = V7State { ms: 0, counter: 0 };
    // A new millisecond starts from the seed, with the counter's top bit clear.
    let a = start.next(1_000, u64::MAX);
    assert_eq!(
        a,
        V7State {
            ms: 1_000,
            counter: (1 << 41) - 1
        }
    );
    // The same millisecond counts on.
    assert_eq!(
        a.next(1_000, 5),
        V7State {
            ms: 1_000,
            counter: 1 << 41
        }
    );
    // A clock that steps back keeps the last millisecond and counts on.
    assert_eq!(a.next(900, 5).ms, 1_000);
    // A full counter borrows the next millisecond.
    let full = V7State {
        ms: 7,
        counter: (1 << 42) - 1,
    };
    assert_eq!(full.next(7, 3), V7State { ms: 8, counter: 3 });
    // Layout: version 7, variant 10, the 48-bit time first.
    let id = uuid::Uuid::from_bytes(
        V7State {
            ms: 0x0123_4567_89ab,
            counter: (1 << 42) - 1,
        }
        .uuid(0),
    );
    assert_eq!(id.get_version_num(), 7);
    assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
    assert_eq!(id.to_string(), "01234567-89ab-7fff-bfff-ffff00000000");
}

#[test]
fn inject_writes_validated_headers_and_replaces_callers() {
    let config = Config::new()
        .service("svc-a", "1.2.3")
        .propagate_header("x-tenant-id")
        .unwrap()
        .request_id_alias("x-trace-id")
        .unwrap();
    let cx = Context::from_headers(
        &headers(&[
            ("traceparent", VALID.as_bytes()),
            ("baggage", b"a=1, bad key=2"),
            ("x-tenant-id", b"t-9"),
            ("x-request-id", b"rid"),
        ]),
        &config,
    );
    let mut out = headers(&[
        ("traceparent", b"garbage"),
        ("x-trace-id", b"stale"),
        ("x-tenant-id", b"x"),
        ("x-tenant-id", b"y"),
    ]);
    let child = SpanId::random();
    cx.inject(&mut out, child, &config);
    let tp = TraceParent::parse(out.get(TRACEPARENT).unwrap().as_bytes()).unwrap();
    assert_eq!(tp.trace_id, cx.trace_id());
    assert_eq!(tp.parent_id, child);
    assert_eq!(out.get(BAGGAGE).unwrap(), "a=1");
    assert!(out.get(TRACESTATE).is_none());
    assert!(out.get("x-trace-id").is_none());
    assert_eq!(out.get("x-request-id").unwrap(), "rid");
    assert_eq!(out.get("x-correlation-id").unwrap(), "rid");
    assert_eq!(
        out.get_all("x-tenant-id").iter().collect::<Vec<_>>(),
        ["t-9"]
    );
    assert_eq!(out.get(SERVICE_NAME).unwrap(), "svc-a");
    assert_eq!(out.get(SERVICE_VERSION).unwrap(), "1.2.3");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever the clock does (stands still, jumps, steps back), one
    /// thread's request IDs only grow.
    #[test]
    fn request_ids_grow_whatever_the_clock_does(
        steps in proptest::collection::vec((0u64..1 << 47, any::<u64>(), any::<u32>()), 1..200),
        counter_start in 0u64..1 << 42,
    ) {
        let mut state = V7State { ms: steps[0].0, counter: counter_start };
        let mut last = u128::from_be_bytes(state.uuid(0));
        for (now, seed, random) in steps {
            state = state.next(now, seed);
            let id = u128::from_be_bytes(state.uuid(random));
            prop_assert!(id > last);
            prop_assert_eq!((id >> 76) & 0xf, 7);
            prop_assert_eq!((id >> 62) & 0x3, 0b10);
            last = id | 0xffff_ffff;
        }
    }

    #[test]
    fn traceparent_never_panics_and_accepts_only_what_it_can_write(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        if let Ok(tp) = TraceParent::parse(&bytes) {
            let again = TraceParent::parse(&tp.encode()).unwrap();
            prop_assert_eq!(again, tp);
        }
    }

    #[test]
    fn traceparent_round_trips(t in 1u128.., s in 1u64.., f in any::<u8>()) {
        let tp = TraceParent {
            trace_id: TraceId::from_bytes(t.to_be_bytes()).unwrap(),
            parent_id: SpanId::from_bytes(s.to_be_bytes()).unwrap(),
            flags: TraceFlags::new(f),
        };
        prop_assert_eq!(TraceParent::parse(&tp.encode()).unwrap(), tp);
    }

    #[test]
    fn traceparent_mutations_of_a_valid_header(pos in 0usize..55, c in any::<u8>()) {
        let mut v = VALID.as_bytes().to_vec();
        v[pos] = c;
        if let Ok(tp) = TraceParent::parse(&v) {
            // Accepted only if the byte is still lowercase hex in a hex
            // field (or the same delimiter).
            prop_assert!(c.is_ascii_digit() || (b'a'..=b'f').contains(&c) || c == VALID.as_bytes()[pos]);
            prop_assert_eq!(TraceParent::parse(&tp.encode()).unwrap(), tp);
        }
    }

    #[test]
    fn tracestate_output_is_valid_and_bounded(
        values in proptest::collection::vec("[a-z0-9_*/@=, \\-\\t!~A-Z]{0,60}", 1..4)
    ) {
        let values: Vec<HeaderValue> = values.iter().filter_map(|v| HeaderValue::from_str(v).ok()).collect();
        if let Ok(Some(out)) = parse_tracestate(&values) {
            prop_assert!(out.len() <= TRACESTATE_MAX_LEN);
            // What it returns parses again to itself.
            prop_assert_eq!(parse_tracestate([&out]).unwrap().unwrap(), out);
        }
    }

    #[test]
    fn tracestate_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(v) = HeaderValue::from_bytes(&bytes) {
            let _ = parse_tracestate([&v]);
        }
    }

    #[test]
    fn baggage_output_is_valid_and_bounded(
        values in proptest::collection::vec("[a-zA-Z0-9=,; %\\t\"\\\\!-]{0,80}", 1..4)
    ) {
        let values: Vec<HeaderValue> = values.iter().filter_map(|v| HeaderValue::from_str(v).ok()).collect();
        if let Some(out) = Baggage::parse(&values) {
            prop_assert!(out.as_str().len() <= BAGGAGE_MAX_LEN);
            prop_assert!(out.as_str().split(',').count() <= BAGGAGE_MAX_MEMBERS);
            let again = Baggage::parse([out.header_value()]).unwrap();
            prop_assert_eq!(again.as_str(), out.as_str());
        }
    }

    #[test]
    fn baggage_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(v) = HeaderValue::from_bytes(&bytes) {
            let _ = Baggage::parse([&v]);
        }
    }
}

proptest! {
    #[test]
    fn visible_ascii_matches_the_byte_by_byte_check(
        bytes in proptest::collection::vec(prop_oneof![20 => 0x21u8..=0x7e, 1 => any::<u8>(), 1 => Just(0x20u8), 1 => Just(0x7fu8)], 0..40)
    ) {
        prop_assert_eq!(
            visible_ascii(&bytes),
            bytes.iter().all(|&c| (0x21..=0x7e).contains(&c))
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn scopes_nest_follow_their_future_and_restore() {
    assert!(current().is_none());
    let outer = Context::new_root();
    let inner = Context::new_root();
    let (o, i) = (outer.trace_id(), inner.trace_id());
    let seen = scope(outer, async move {
        let before = current().unwrap().trace_id();
        let during = scope(inner, async {
            // Across an await point the context stays.
            tokio::task::yield_now().await;
            current().unwrap().trace_id()
        })
        .await;
        let after = current().unwrap().trace_id();
        (before, during, after)
    })
    .await;
    assert_eq!(seen, (o, i, o));
    // Another future polled on the same thread between this one's polls
    // does not see it.
    let cx = Context::new_root();
    let scoped = scope(cx, async {
        tokio::task::yield_now().await;
        current().map(|cx| cx.trace_id())
    });
    let other = async {
        tokio::task::yield_now().await;
        current()
    };
    let (mine, theirs) = tokio::join!(scoped, other);
    assert!(mine.is_some());
    assert!(theirs.is_none());
    assert!(current().is_none());
}

#[test]
fn a_scope_is_restored_when_its_future_panics_and_seen_while_it_drops() {
    struct SeesContext(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Drop for SeesContext {
        fn drop(&mut self) {
            self.0
                .store(current().is_some(), std::sync::atomic::Ordering::SeqCst);
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(scope(Context::new_root(), async {
            panic!("handler panicked");
        }))
    }));
    assert!(panicked.is_err());
    assert!(current().is_none());
    // Dropped before completion: the future's destructors run in scope.
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let guard = SeesContext(flag.clone());
    let fut = scope(Context::new_root(), async move {
        let _guard = guard;
        std::future::pending::<()>().await;
    });
    rt.block_on(async {
        let mut fut = Box::pin(fut);
        let _ = futures_util::poll!(fut.as_mut());
        drop(fut);
    });
    assert!(flag.load(std::sync::atomic::Ordering::SeqCst));
    assert!(current().is_none());
}

#[test]
fn a_cancelled_request_drops_its_handler_with_the_context_in_scope() {
    use tower::{Layer, Service, ServiceExt};
    struct SeesContext(std::sync::Arc<std::sync::Mutex<Option<TraceId>>>);
    impl Drop for SeesContext {
        fn drop(&mut self) {
            *self.0.lock().unwrap() = current().map(|cx| cx.trace_id());
        }
    }
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let for_handler = seen.clone();
    let mut svc = ServerContextLayer::new(Config::new()).layer(tower::service_fn(
        move |_req: http::Request<()>| {
            let guard = SeesContext(for_handler.clone());
            async move {
                let _guard = guard;
                std::future::pending::<()>().await;
                Ok::<_, std::convert::Infallible>(http::Response::new(()))
            }
        },
    ));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let req = http::Request::builder()
        .header("traceparent", traceparent)
        .body(())
        .unwrap();
    rt.block_on(async {
        let svc = svc.ready().await.unwrap();
        let mut fut = Box::pin(svc.call(req));
        assert!(futures_util::poll!(fut.as_mut()).is_pending());
        drop(fut); // the client went away
    });
    let trace = seen.lock().unwrap().expect("the handler saw its context");
    assert_eq!(trace.to_string(), "0af7651916cd43dd8448eb211c80319c");
    assert!(current().is_none());
}

#[test]
fn carried_headers_keep_only_plain_values() {
    let config = Config::new().propagate_header("x-tenant-id").unwrap();
    let carried = |value: &[u8]| {
        let h = headers(&[("x-tenant-id", value)]);
        Context::from_headers(&h, &config)
            .propagated()
            .iter()
            .map(|(_, v)| v.as_bytes().to_vec())
            .collect::<Vec<_>>()
    };
    assert_eq!(carried(b"acme corp\t1"), vec![b"acme corp\t1".to_vec()]);
    assert_eq!(carried(&[b'a'; MAX_PROPAGATED_LEN]).len(), 1);
    assert!(carried(&[b'a'; MAX_PROPAGATED_LEN + 1]).is_empty());
    assert!(carried("caf\u{e9}".as_bytes()).is_empty());
    assert!(carried(b"").is_empty());
}

/// Headers a proxy, a hop or the layers own are refused as carried headers,
/// with an error naming the header; an ID header may not be carried either.
#[test]
fn owned_headers_are_never_carried() {
    for header in [
        "host",
        "Host",
        "x-forwarded-for",
        "via",
        "content-length",
        "connection",
        "transfer-encoding",
        "te",
        "upgrade",
        "traceparent",
        "tracestate",
        "baggage",
        "x-request-id",
        "x-correlation-id",
        "x-service-name",
    ] {
        let err = Config::new().propagate_header(header).unwrap_err();
        assert_eq!(err.field(), "propagate_headers");
        assert!(
            err.to_string().contains(&header.to_ascii_lowercase()),
            "{err}"
        );
    }
    let aliased = Config::new().request_id_alias("x-trace-id").unwrap();
    assert!(aliased.propagate_header("x-trace-id").is_err());
    let carried = Config::new().propagate_header("x-tenant-id").unwrap();
    let err = carried.clone().request_id_alias("x-tenant-id").unwrap_err();
    assert_eq!(err.field(), "request_id_aliases");
    assert!(carried
        .clone()
        .correlation_id_header("x-tenant-id")
        .is_err());
    assert!(carried.propagate_header("x-user-id").is_ok());
}

/// A trace this crate starts says so (Level 2): sampled, and its trace ID
/// random; a continued trace keeps the caller's flags.
#[test]
fn a_started_trace_sets_the_random_flag() {
    let fresh = Context::from_headers(&HeaderMap::new(), &Config::new());
    assert_eq!(fresh.flags().bits(), 0x03);
    assert_eq!(Context::new_root().flags().bits(), 0x03);
    let mut out = HeaderMap::new();
    fresh.inject(&mut out, SpanId::random(), &Config::new());
    assert!(out["traceparent"].to_str().unwrap().ends_with("-03"));
    let continued = Context::from_headers(
        &headers(&[(
            "traceparent",
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )]),
        &Config::new(),
    );
    assert_eq!(continued.flags().bits(), 0x01);
}
