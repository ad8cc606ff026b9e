//! The gRPC control API (`bastion.v1.Control`) and what each call does:
//! [`service`] (the calls, the caller check, errors as gRPC statuses),
//! [`connect`], [`status`], [`reload`], [`doctor`] (with [`doctor_hints`]),
//! [`discover`], [`names`] (VM names made resource ids), [`clusters`] (AKS
//! clusters and their kubeconfigs) and [`errors`]
//! (what each error is as a gRPC status). The top of the
//! daemon: it may use every folder below it, and nothing below uses it.

pub mod clusters;
pub mod connect;
pub mod discover;
pub mod doctor;
pub mod doctor_hints;
pub mod errors;
pub mod names;
pub mod reload;
pub mod service;
pub mod status;
