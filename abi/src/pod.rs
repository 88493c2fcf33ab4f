//! `aya::Pod` for the map structs (the `aya` feature), so aya's typed maps
//! take them as keys and values.

use crate::layout::{
    ConnEntry, ConnKey, GlobalStats, HcCtl, HcStats, LbCounter, LbCtl, RealDef, RingSlots, VipFilter, VipKey, VipMeta,
};

// SAFETY: each type is #[repr(C)], made only of integers and byte arrays, with
// explicit padding fields, so every bit pattern is valid and there are no holes.
unsafe impl aya::Pod for VipKey {}
unsafe impl aya::Pod for VipMeta {}
unsafe impl aya::Pod for RealDef {}
unsafe impl aya::Pod for ConnKey {}
unsafe impl aya::Pod for ConnEntry {}
unsafe impl aya::Pod for LbCtl {}
unsafe impl aya::Pod for LbCounter {}
unsafe impl aya::Pod for GlobalStats {}
unsafe impl aya::Pod for VipFilter {}
unsafe impl aya::Pod for RingSlots {}
unsafe impl aya::Pod for HcCtl {}
unsafe impl aya::Pod for HcStats {}
