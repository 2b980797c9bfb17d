//! catalio-operator: Catalio API credentials as Kubernetes custom resources,
//! reconciled into Secrets.
#![forbid(unsafe_code)]

pub mod config;
pub mod controller;
pub mod crd;
pub mod duration;
pub mod index;
pub mod run;
pub mod secret;
pub mod telemetry;
