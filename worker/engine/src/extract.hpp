// Mode::Extract: the packets of one flow, cut out of the captures it came from into a pcap
// file (libpcap's dumper, written through an OutputFile: complete or absent).
//
// A packet is the flow's when the engine's own decoder gives it the flow's key (either
// direction for `<->`), VLAN and a time inside the selector's span: the same decoding as the
// conversion (tunnels removed the same way, non-first IP fragments given the ports of their
// first fragment), after the same BPF filter (Options::bpf_filter, the converting task's). A
// BPF expression on the 5-tuple alone would miss both: non-first fragments carry no ports, and
// a tunnelled flow's addresses are not the outer header's. So the packet count equals the
// flow record's.
#pragma once

#include <atomic>

#include "ipfixweb/engine/engine.hpp"

namespace ipfixweb::engine {

// Writes opts.output (a pcap with the link type of the first matching packet's capture, or of
// the first capture when none matches) and returns its summary: packets and bytes (IP bytes,
// the flow record's measure) written, flows 1 (0 when no packet matched).
Conversion extract_flow(const Options& opts, const ProgressFn& progress,
                        const std::atomic<bool>* cancel);

}  // namespace ipfixweb::engine
