//! `twill ui`: a service map and live flow table in the browser, fed by any
//! Hubble-compatible Observer server.
//!
//! [`map`] and [`filter`] are pure (flows in, nodes/edges or a yes/no out);
//! [`store`] keeps the newest flows and counters; [`server`] is the HTTP
//! side and [`follow`] the one task that reads the Hubble server.

pub mod filter;
pub mod follow;
pub mod map;
pub mod row;
pub mod server;
pub mod store;

pub use server::{serve, Error, Ui};
