//! What the benches share: an allocation-counting global allocator, the
//! baseline handler and request, and a per-call allocation count.
#![allow(dead_code)]

use http::{Request, Response};
use std::{
    alloc::{GlobalAlloc, Layout, System},
    convert::Infallible,
    hint::black_box,
    sync::atomic::{AtomicU64, Ordering},
};

/// The system allocator, counting allocations.
pub struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The baseline handler: a bare `service_fn` answering an empty 200.
pub async fn handler(req: Request<()>) -> Result<Response<()>, Infallible> {
    black_box(&req);
    Ok(Response::new(()))
}

/// The request every bench sends, built outside the timed region.
pub fn request() -> Request<()> {
    Request::get("http://127.0.0.1/").body(()).unwrap()
}

/// Allocations per call of `f`, over 1000 calls.
pub fn allocs<F, Fut>(rt: &tokio::runtime::Runtime, mut f: F) -> f64
where
    F: FnMut(Request<()>) -> Fut,
    Fut: std::future::Future,
{
    rt.block_on(async {
        let reqs: Vec<_> = (0..1000).map(|_| request()).collect();
        let before = ALLOCS.load(Ordering::Relaxed);
        for req in reqs {
            let _ = f(req).await;
        }
        (ALLOCS.load(Ordering::Relaxed) - before) as f64 / 1000.0
    })
}

/// Awaits `f` on each of `reqs` in turn on `rt`: the region an instruction
/// count measures (`valgrind --tool=callgrind --toggle-collect='*::support::counted'`).
#[inline(never)]
pub fn counted<R, F, Fut>(rt: &tokio::runtime::Runtime, reqs: Vec<R>, mut f: F)
where
    F: FnMut(R) -> Fut,
    Fut: std::future::Future,
{
    rt.block_on(async {
        for req in reqs {
            black_box(f(req).await);
        }
    })
}

/// A bench binary's `main`: with the environment variable `var` set, runs
/// `count` with its value (an instruction-count run, see [`counted`]);
/// otherwise the criterion benches.
pub fn main_or_count(var: &str, count: fn(&str), benches: fn()) {
    if let Ok(which) = std::env::var(var) {
        count(&which);
        return;
    }
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
