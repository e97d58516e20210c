//! Every integration test, in one binary: linking the whole dependency tree once instead
//! of once per file is what a 2-core CI machine pays for (see CHANGELOG for the figures).
//!
//! Each module drives the real layer through `tower::ServiceExt::oneshot` or real HTTP and
//! talks to real SQLite, PostgreSQL (`DATABASE_URL`) and Redis (`REDIS_URL`); tests that
//! need a service skip without it unless `TAS_REQUIRE_SERVICES=1`.

#[macro_use]
mod common;
#[cfg(feature = "redis")]
mod redis_support;

mod bearer_modes;
mod better_auth_interop;
mod better_auth_storage;
mod better_auth_wire;
mod cookie_cache;
mod cookie_cache_budget;
mod cookie_cache_redis;
mod core;
mod docs_references;
mod example_device_page;
mod example_hyper;
mod example_server;
mod example_tonic;
mod field_policy;
mod fuzz_regressions;
mod identities;
mod lifecycle;
mod management;
mod outside_axum;
mod postgres_faults;
mod public_api;
#[cfg(feature = "rate-limit")]
mod rate_limit;
mod readme_quick_start;
mod redis_cluster;
mod redis_cluster_bus;
mod redis_compat;
mod redis_faults;
mod redis_memory;
mod redis_races;
mod redis_secondary_only;
mod redis_tier;
mod response_hygiene;
mod restart;
mod review_regressions;
mod sqlite_store;
mod store_conformance;
mod store_scale;
