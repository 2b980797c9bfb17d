//! catalio-operator: Catalio API credentials as Kubernetes custom resources,
//! reconciled into Secrets; an OAuth 2.0 token endpoint for them; and a
//! JSON:API over the business custom resources.
#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod config;
pub mod controller;
pub mod crd;
pub mod duration;
pub mod federation;
#[cfg(any(test, fuzzing))]
pub mod fuzz;
pub mod index;
pub mod leader;
pub mod metrics;
pub mod owner;
pub mod plugin;
pub mod reference;
pub mod run;
pub mod scope;
pub mod secret;
pub mod server;
pub mod telemetry;
pub mod token;
pub mod usage;
pub mod watch;
pub mod writes;
