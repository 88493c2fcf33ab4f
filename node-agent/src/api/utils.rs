//! Utilities: the default router's MAC, the real of a flow, packet
//! simulation through the real program (BPF_PROG_TEST_RUN), and the file
//! descriptors of the programs (the balancer's, the healthcheck program's)
//! and the balancer's maps in this process.
//!
//! `simulate-packet` takes and returns standard base64. Its data is
//! `{"packet": <frame>, "verdict": "XDP_TX"}` when the program transmits the
//! frame, and `{"packet": null, "verdict": "XDP_PASS"}` (or `XDP_DROP`, ...)
//! otherwise: katran returns the packet only for XDP_TX; the verdict is
//! weir's addition. A simulated packet is a real run: it counts and may add
//! a connection-table entry, as a live packet would.
//!
//! `real-for-flow` is a question, not a packet: it answers where a new
//! connection of the flow goes (katran's meaning; its simulator builds a SYN)
//! from a run of the balancer's dry query program, and, in weir's extra
//! field `existing`, where the flow's existing connection goes, from a read
//! of the connection table. It changes nothing: no counter, no table entry.

use axum::extract::State;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::error::ApiError;
use super::extract::{Body, Params};
use super::reply::{Acknowledged, Data, Done, Success};
use super::stats::weir_map;
use super::types::{Fd, FlowQuery, FlowReal, Mac, MapName, SimulatePacket, SimulatedPacket};
use super::ApiState;
use crate::dataplane::{Flow, Verdict};

/// This module's handlers, each served at the path and method its `#[utoipa::path]` names.
pub(super) fn router() -> utoipa_axum::router::OpenApiRouter<ApiState> {
    use utoipa_axum::{router::OpenApiRouter, routes};
    OpenApiRouter::new()
        .routes(routes!(get_mac))
        .routes(routes!(set_mac))
        .routes(routes!(real_for_flow))
        .routes(routes!(simulate_packet))
        .routes(routes!(prog_fd))
        .routes(routes!(hc_prog_fd))
        .routes(routes!(map_fd))
}

/// Parses `aa:bb:cc:dd:ee:ff` (or with `-`), naming `field` when it is not a MAC.
pub(super) fn parse_mac(field: &str, text: &str) -> Result<[u8; 6], ApiError> {
    text.parse::<weir_crds::mac::Mac>().map(|mac| mac.0).map_err(|e| ApiError::invalid(format!("{field}: {e}")))
}

pub(super) fn format_mac(mac: [u8; 6]) -> String {
    weir_crds::mac::Mac(mac).to_string()
}

/// The default router's MAC: the Ethernet destination of encapsulated packets.
#[utoipa::path(get, path = "/api/v1/utils/mac", tag = "utils",
    responses((status = 200, description = "The MAC", body = Success<Mac>)))]
async fn get_mac(State(state): State<ApiState>) -> Result<Data<Mac>, ApiError> {
    let mac = state.read(|lb| Ok(lb.default_mac())).await?;
    Ok(Data(Mac { mac: format_mac(mac) }))
}

/// Changes the default router's MAC.
#[utoipa::path(put, path = "/api/v1/utils/mac", tag = "utils", request_body = Mac,
    responses((status = 200, description = "Changed", body = Acknowledged)))]
async fn set_mac(State(state): State<ApiState>, Body(req): Body<Mac>) -> Result<Done, ApiError> {
    let mac = parse_mac("mac", &req.mac)?;
    state.write(move |lb| lb.set_default_mac(mac)).await?;
    Ok(Done)
}

/// The real a new connection of the flow goes to, and (`existing`) the real
/// its existing connection goes to, if the connection table has one; 404
/// when the flow is not for a VIP or the VIP has no real for a new
/// connection. Changes no counter and no connection-table entry.
#[utoipa::path(get, path = "/api/v1/utils/real-for-flow", tag = "utils", params(FlowQuery),
    request_body(content = Option<FlowQuery>, description = "The parameters as a JSON body, instead of the query string"),
    responses(
        (status = 200, description = "`address`: the real of a new connection (as katran); `existing`: the real of \
            the flow's existing connection, or null", body = Success<FlowReal>),
        (status = 404, description = "Not for a VIP, or the VIP has no real for a new connection")))]
async fn real_for_flow(
    State(state): State<ApiState>,
    Params(req): Params<FlowQuery>,
) -> Result<Data<FlowReal>, ApiError> {
    let flow = Flow {
        src: state.ip("src", &req.src)?,
        dst: state.ip("dst", &req.dst)?,
        src_port: req.src_port,
        dst_port: req.dst_port,
        proto: req.proto,
    };
    let (new, existing) =
        state.read(move |lb| Ok((lb.real_for_flow(&flow)?, lb.existing_real_for_flow(&flow)?))).await?;
    match new {
        Some(real) => Ok(Data(FlowReal { address: real.to_string(), existing: existing.map(|r| r.to_string()) })),
        None => Err(ApiError::not_found(format!(
            "no real for the flow {}:{} -> {}:{} proto {} (not a VIP, or the VIP has no real for it)",
            flow.src, flow.src_port, flow.dst, flow.dst_port, flow.proto
        ))),
    }
}

/// Runs an Ethernet frame (standard base64) through the balancer program.
#[utoipa::path(post, path = "/api/v1/utils/simulate-packet", tag = "utils", request_body = SimulatePacket,
    responses((status = 200, description = "The frame sent (XDP_TX only) and the verdict", body = Success<SimulatedPacket>)))]
async fn simulate_packet(
    State(state): State<ApiState>,
    Body(req): Body<SimulatePacket>,
) -> Result<Data<SimulatedPacket>, ApiError> {
    // Whitespace is skipped: `base64` wraps its output at 76 columns.
    let text: String = req.packet.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let frame = STANDARD.decode(text).map_err(|e| ApiError::invalid(format!("packet: not standard base64: {e}")))?;
    let run = state.read(move |lb| lb.simulate(&frame)).await?;
    let packet = (run.verdict == Verdict::Tx).then(|| STANDARD.encode(&run.packet));
    Ok(Data(SimulatedPacket { packet, verdict: run.verdict.name() }))
}

/// The balancer program's file descriptor in this process.
#[utoipa::path(get, path = "/api/v1/utils/prog-fd", tag = "utils",
    responses((status = 200, description = "The program's fd", body = Success<Fd>)))]
async fn prog_fd(State(state): State<ApiState>) -> Result<Data<Fd>, ApiError> {
    state.read(|lb| lb.prog_fd()).await.map(|fd| Data(Fd { fd }))
}

/// The healthcheck program's file descriptor in this process; 501 without `enable_hc`.
#[utoipa::path(get, path = "/api/v1/utils/hc-prog-fd", tag = "utils",
    responses((status = 200, description = "The healthcheck program's fd", body = Success<Fd>),
        (status = 501, description = "The balancer was created without enable_hc", body = super::reply::Failure)))]
async fn hc_prog_fd(State(state): State<ApiState>) -> Result<Data<Fd>, ApiError> {
    state.read(|lb| lb.healthchecker()?.prog_fd()).await.map(|fd| Data(Fd { fd }))
}

/// A map's file descriptor in this process, by weir's or Katran's name.
#[utoipa::path(get, path = "/api/v1/utils/map-fd", tag = "utils", params(MapName),
    request_body(content = Option<MapName>, description = "The parameters as a JSON body, instead of the query string"),
    responses((status = 200, description = "The map's fd", body = Success<Fd>)))]
async fn map_fd(State(state): State<ApiState>, Params(req): Params<MapName>) -> Result<Data<Fd>, ApiError> {
    let map = weir_map(&req.map_name)?;
    state.read(move |lb| lb.map_fd(map)).await.map(|fd| Data(Fd { fd }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(parse_mac("mac", "aa:BB:0c:dd:ee:ff").unwrap(), [0xaa, 0xbb, 0x0c, 0xdd, 0xee, 0xff]);
        assert_eq!(parse_mac("mac", "aa-bb-0c-dd-ee-ff").unwrap(), [0xaa, 0xbb, 0x0c, 0xdd, 0xee, 0xff]);
        for bad in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "a:bb:cc:dd:ee:ff0",
            "gg:bb:cc:dd:ee:ff",
            "+a:bb:cc:dd:ee:ff",
        ] {
            let e = parse_mac("mac", bad).unwrap_err();
            assert!(e.message.starts_with("mac: "), "{bad}: {}", e.message);
        }
        assert_eq!(format_mac([0xaa, 0xbb, 0x0c, 0xdd, 0xee, 0xff]), "aa:bb:0c:dd:ee:ff");
    }
}
