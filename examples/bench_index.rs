//! What the JSON:API's index costs, without the API server: N requirements
//! shaped like `bench/api.sh`'s (four statuses, three priorities, two tags
//! of fifty, one of ten personas) built into the index as the watch builds
//! them, then the memory the index holds for them and the time to render
//! `bench/api.sh`'s two pages, in process, on one thread. `bench/api.sh`
//! prints it beside the HTTP figures, so what grows with the collection is
//! visible apart from the HTTP round trip.
//!
//!     bench_index N...   one line per N

use std::time::Instant;

use catalio_operator::api::document;
use catalio_operator::api::order::Order;
use catalio_operator::api::query::{self, Target};
use catalio_operator::api::store::{Index, Organization};
use catalio_operator::crd::registry::by_endpoint;
use catalio_operator::index::resources::{Entry, ResourceStore};
use kube::api::DynamicObject;
use serde_json::json;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const PAGES: [(&str, &str); 2] = [
    ("include=persona", "include=persona"),
    (
        "filter+sort+include",
        "filter[status]=active&sort=-priority,title&include=persona",
    ),
];

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("N is a number"))
        .collect();
    if sizes.is_empty() {
        eprintln!("usage: bench_index N...");
        std::process::exit(2);
    }
    println!("objects\tindex bytes per requirement\tpage\tµs per page\tbytes per page");
    for n in sizes {
        measure(n);
    }
}

fn object(kind: &str, name: &str, rv: usize, spec: serde_json::Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "catalio.ai/v1",
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": "bench",
            "uid": format!("00000000-0000-0000-0000-{rv:012}"),
            "resourceVersion": (1000 + rv).to_string(),
            "creationTimestamp": "2026-12-06T10:00:00Z",
            "managedFields": [{
                "manager": "kubectl-create", "operation": "Update",
                "time": "2026-12-06T10:00:00Z"
            }]
        },
        "spec": spec
    }))
    .expect("a valid object")
}

fn measure(n: usize) {
    let requirement = by_endpoint("requirements").expect("the type");
    let persona = by_endpoint("personas").expect("the type");
    let statuses = ["draft", "active", "confirmed", "investigating"];
    let priorities = ["low", "medium", "high", "critical"];
    let store = ResourceStore::new(2);
    let personas = (0..10).map(|p| {
        let spec = json!({"name": format!("Persona {p}"), "role": format!("Role {p}")});
        Entry::from_object(
            persona,
            &object("Persona", &format!("persona-{p}"), p, spec),
        )
        .expect("a persona")
    });
    store.replace(0, persona, None, personas.collect::<Vec<_>>());
    let before = allocated();
    // Built one by one, as objects arrive: a listing's objects are not all
    // in memory at once.
    let requirements = (0..n).map(|r| {
        let spec = json!({
            "title": format!("Requirement number {r}"),
            "description": "Generated for the benchmark",
            "status": statuses[r % 4],
            "priority": priorities[r % 3],
            "tags": ["bench", format!("t{}", r % 50)],
            "persona": format!("persona-{}", r % 10),
        });
        let name = format!("req-{r:06}");
        Entry::from_object(requirement, &object("Requirement", &name, 10 + r, spec))
            .expect("a requirement")
    });
    store.replace(1, requirement, None, requirements);
    for (_, raw) in PAGES {
        let q = query::parse(requirement, raw, Target::Collection).expect("a query");
        if let Some((order, _)) = Order::of(requirement, &q) {
            store.keep_sorted("bench", order);
        }
    }
    let held = allocated() - before;
    for (label, raw) in PAGES {
        let q = query::parse(requirement, raw, Target::Collection).expect("a query");
        let render = || {
            store.read("bench", |org| {
                let order = Order::of(requirement, &q);
                assert!(order.is_none_or(|(o, value)| org.sorted(&o, value).is_some()));
                let doc = document::collection(requirement, org, &q).expect("a page");
                serde_json::to_vec(&doc).expect("a document")
            })
        };
        let bytes = render().len();
        let rounds = 20_000;
        let start = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(render());
        }
        let per_page = start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
        println!(
            "{n}\t{:.0}\t{label}\t{per_page:.1}\t{bytes}",
            held as f64 / n as f64
        );
    }
}

/// Bytes the allocator has handed out and not had back.
fn allocated() -> usize {
    tikv_jemalloc_ctl::epoch::advance().expect("jemalloc epoch");
    tikv_jemalloc_ctl::stats::allocated::read().expect("jemalloc stats")
}
