//! Placeholder.
pub struct Balancer;
pub struct FlowVerdict;
pub struct RealSpec;
pub struct SimulatedPacket;
pub struct VipInfo;
pub struct VipSpec;
