//! The sidecar's log: `tracing` events on stderr, filtered by `RUST_LOG`
//! (when set) or `[sidecar] log`, and at most [`PER_SECOND`] a second from
//! any one place in the code, so that a flood of failing requests cannot
//! fill a disk. When events from a place were held back, the next one that
//! passes is preceded by a line saying how many.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};
use tracing::{callsite::Identifier, Event, Metadata, Subscriber};
use tracing_subscriber::{
    filter::Targets,
    layer::{Context, Filter, Layer, SubscriberExt},
    registry::Registry,
};

/// What is logged without `RUST_LOG` or `[sidecar] log`.
pub(crate) const DEFAULT_FILTER: &str = "info";

/// Events a second let through from one place in the code.
pub(crate) const PER_SECOND: u32 = 10;

/// Parses a filter written as `RUST_LOG` takes it: `info`,
/// `warn,tower_shield=debug`.
pub(crate) fn parse(text: &str) -> Result<Targets, String> {
    text.parse::<Targets>().map_err(|err| {
        format!("{text:?} is not a log filter ({err}); write one like \"info\" or \"warn,tower_shield=debug\"")
    })
}

/// The filter in force: `RUST_LOG` when it is set, else `configured`, else
/// [`DEFAULT_FILTER`].
pub(crate) fn filter(configured: Option<&str>) -> Result<Targets, String> {
    match std::env::var("RUST_LOG") {
        Ok(text) if !text.trim().is_empty() => {
            parse(&text).map_err(|err| format!("RUST_LOG: {err}"))
        }
        _ => parse(configured.unwrap_or(DEFAULT_FILTER)),
    }
}

/// A layer beside the log (the OTLP span exporter), if any.
pub(crate) type Extra = Box<dyn Layer<Registry> + Send + Sync>;

/// Installs the global subscriber: the log on stderr, under `filter` and
/// the rate limit, and `extra` beside it.
pub(crate) fn install(filter: Targets, extra: Option<Extra>) {
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter)
        .with_filter(RateLimit::new(PER_SECOND));
    let subscriber = tracing_subscriber::registry().with(extra).with(log);
    // Only `main` installs one, once.
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// Lets at most `per_second` events a second through from each callsite.
struct RateLimit {
    per_second: u32,
    start: Instant,
    seen: Mutex<HashMap<Identifier, Window>>,
}

/// One callsite's current second.
#[derive(Default)]
struct Window {
    second: u64,
    passed: u32,
    held: u64,
}

impl RateLimit {
    fn new(per_second: u32) -> Self {
        Self {
            per_second,
            start: Instant::now(),
            seen: Mutex::default(),
        }
    }

    fn pass(&self, meta: &Metadata<'_>, now: Duration) -> bool {
        let second = now.as_secs();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        // Callsites are static and few: the map is bounded by the code.
        let window = seen.entry(meta.callsite()).or_default();
        if window.second != second {
            if window.held > 0 {
                eprintln!(
                    "sidecar: {} log events from {} ({}:{}) were held back (at most {} a second)",
                    window.held,
                    meta.target(),
                    meta.file().unwrap_or("?"),
                    meta.line().unwrap_or(0),
                    self.per_second
                );
            }
            *window = Window {
                second,
                ..Window::default()
            };
        }
        if window.passed < self.per_second {
            window.passed += 1;
            true
        } else {
            window.held += 1;
            false
        }
    }
}

impl<S: Subscriber> Filter<S> for RateLimit {
    fn enabled(&self, _: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _: &Context<'_, S>) -> bool {
        self.pass(event.metadata(), self.start.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_like_rust_log() {
        assert!(parse("info").is_ok());
        assert!(parse("warn,tower_shield=debug").is_ok());
        let err = parse("tower_shield=loud").unwrap_err();
        assert!(err.contains("is not a log filter"), "{err}");
    }

    /// Records the metadata of every event.
    struct Collect(std::sync::Arc<Mutex<Vec<&'static Metadata<'static>>>>);

    impl Subscriber for Collect {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &Event<'_>) {
            self.0.lock().unwrap().push(event.metadata());
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[test]
    fn each_callsite_gets_its_share_each_second() {
        let metas = std::sync::Arc::new(Mutex::new(Vec::new()));
        tracing::subscriber::with_default(Collect(metas.clone()), || {
            tracing::warn!("first place");
            tracing::warn!("second place");
        });
        let metas = metas.lock().unwrap();
        let (a, b) = (metas[0], metas[1]);
        let limit = RateLimit::new(3);
        let passed = (0..5).filter(|_| limit.pass(a, Duration::ZERO)).count();
        assert_eq!(passed, 3);
        // Another place has its own share.
        assert!(limit.pass(b, Duration::ZERO));
        // The next second, the first place may speak again, as much.
        let passed = (0..5)
            .filter(|_| limit.pass(a, Duration::from_millis(1500)))
            .count();
        assert_eq!(passed, 3);
    }
}
