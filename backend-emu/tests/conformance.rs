//! The hypervisor conformance suite on the software CPU.

use backend_emu::EmuHypervisor;
use hv::{IrqChipMode, Partition, PartitionConfig};
use std::sync::Arc;

fn emu(vcpus: u32) -> hv::Result<Arc<dyn Partition>> {
    let p = EmuHypervisor.create_partition(&PartitionConfig {
        vcpu_count: vcpus,
        irqchip: IrqChipMode::Split,
    })?;
    Ok(Arc::new(p) as Arc<dyn Partition>)
}

conformance::backend_tests!(emu);
