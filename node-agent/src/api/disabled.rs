//! Endpoints of features weir's datapath does not have yet: QUIC, source
//! routing, inline decapsulation, the packet monitor, TCP server-id routing,
//! source-IP (GUE) encapsulation, the global LRU. Each answers 501
//! FEATURE_DISABLED naming the feature, before
//! and after `/lb/create`, whatever the request carries; `/features/check`
//! reports them unavailable. TODO(#3 follow-up): fill them in with the
//! datapath features.

use axum::http::{Method, Uri};

use super::error::ApiError;
use super::reply::Failure;

fn disabled(feature: &str, method: Method, uri: Uri) -> ApiError {
    ApiError::feature_disabled(format!(
        "{method} {}: {feature} is not available: weir's datapath does not implement it yet",
        uri.path()
    ))
}

/// Declares each disabled endpoint as a documented handler answering 501.
/// (`tt` fragments, not `literal`: they reach utoipa's attribute as plain tokens.)
macro_rules! disabled {
    ($($name:ident: $method:ident $path:tt => $feature:tt;)+) => {
        /// This module's handlers, each served at the path and method its `#[utoipa::path]` names.
        pub(super) fn router() -> utoipa_axum::router::OpenApiRouter<super::ApiState> {
            use utoipa_axum::{router::OpenApiRouter, routes};
            OpenApiRouter::new()$(.routes(routes!($name)))+
        }
        $(
            /// Not available in weir yet: answers 501 FEATURE_DISABLED.
            #[utoipa::path($method, path = $path, tag = "disabled",
                responses((status = 501, description = "FEATURE_DISABLED: the datapath does not have this feature yet",
                    body = Failure)))]
            async fn $name(method: Method, uri: Uri) -> ApiError {
                disabled($feature, method, uri)
            }
        )+
    };
}

const QUIC: &str = "QUIC";
const SRC_ROUTING: &str = "source routing";
const INLINE_DECAP: &str = "inline decapsulation";
const MONITOR: &str = "the packet monitor (introspection)";
const TPR: &str = "TCP server-id routing";
const GLOBAL_LRU: &str = "the global LRU (GLOBAL_LRU)";
const SRC_IP_ENCAP: &str = "source-IP encapsulation (GUE)";

disabled! {
    stats_vip_decap: get "/api/v1/stats/vip/decap" => INLINE_DECAP;
    stats_lru_global: get "/api/v1/stats/lru/global" => GLOBAL_LRU;
    stats_src_routing: get "/api/v1/stats/src-routing" => SRC_ROUTING;
    stats_inline_decap: get "/api/v1/stats/inline-decap" => INLINE_DECAP;
    stats_decap: get "/api/v1/stats/decap" => INLINE_DECAP;
    stats_quic_icmp: get "/api/v1/stats/quic-icmp" => QUIC;
    stats_quic_packets: get "/api/v1/stats/quic-packets" => QUIC;
    stats_tcp_server_id_routing: get "/api/v1/stats/tcp-server-id-routing" => TPR;
    stats_monitor: get "/api/v1/stats/monitor" => MONITOR;
    get_quic_reals: get "/api/v1/quic/reals" => QUIC;
    modify_quic_reals: put "/api/v1/quic/reals" => QUIC;
    get_src_rules: get "/api/v1/routing/src-rules" => SRC_ROUTING;
    add_src_rules: post "/api/v1/routing/src-rules" => SRC_ROUTING;
    del_src_rules: delete "/api/v1/routing/src-rules" => SRC_ROUTING;
    clear_src_rules: delete "/api/v1/routing/src-rules/all" => SRC_ROUTING;
    src_rules_size: get "/api/v1/routing/src-rules/size" => SRC_ROUTING;
    get_inline_decap_dsts: get "/api/v1/routing/decap/inline" => INLINE_DECAP;
    add_inline_decap_dst: post "/api/v1/routing/decap/inline" => INLINE_DECAP;
    del_inline_decap_dst: delete "/api/v1/routing/decap/inline" => INLINE_DECAP;
    monitor_stop: post "/api/v1/monitor/stop" => MONITOR;
    monitor_restart: post "/api/v1/monitor/restart" => MONITOR;
    global_lru_map_fds: get "/api/v1/utils/global-lru-map-fds" => GLOBAL_LRU;
    src_ip_encap: post "/api/v1/utils/src-ip-encap" => SRC_IP_ENCAP;
}
