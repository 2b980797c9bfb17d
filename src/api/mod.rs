//! The JSON:API engine, pure: the query language ([`query`]), request
//! documents ([`input`]), response documents ([`document`]) and the order
//! they sort in ([`order`]), error documents
//! ([`error`]), media-type rules ([`media`]) and the OpenAPI description
//! ([`openapi`]), all generic over the type declarations in
//! [`crate::crd::registry`]. It reads objects through the traits in
//! [`store`], which the index implements, and knows neither warp nor
//! Kubernetes: [`crate::server::jsonapi`] serves it over HTTP and
//! [`crate::writes`] writes to the API server.

pub mod document;
pub mod error;
pub mod input;
pub mod media;
pub mod openapi;
pub mod order;
pub mod overview;
pub mod query;
pub mod store;
