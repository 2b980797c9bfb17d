//! catalio-operator: Catalio API credentials as Kubernetes custom resources,
//! reconciled into Secrets.
#![forbid(unsafe_code)]

pub mod config;
pub mod controller;
pub mod crd;
pub mod duration;
pub mod index;
pub mod leader;
pub mod metrics;
pub mod run;
pub mod scope;
pub mod secret;
pub mod server;
pub mod telemetry;
pub mod token;
pub mod usage;
