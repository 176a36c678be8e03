"""What went over the wire: a reader for the captures ``tcpdump -w`` writes, and a check that every
packet in one belongs to a connection a given client opened to a given server port.

Standard library only. The format is small: a 24-byte global header (magic, version, snap length,
link type), then per packet a 16-byte header (time, captured and original length) and the bytes.
A capture on ``-i any`` has Linux "cooked" link headers: ``LINUX_SLL`` (113) or, with libpcap
1.10+, ``LINUX_SLL2`` (276, which also names the interface). Inside: IPv4 and IPv6, with TCP and
UDP ports; ARP and anything else is kept as a frame with its EtherType.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

LINKTYPE_ETHERNET = 1
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
ETH_IPV4, ETH_ARP, ETH_IPV6 = 0x0800, 0x0806, 0x86DD
TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58
PROTOCOLS = {TCP: "TCP", UDP: "UDP", ICMP: "ICMP", ICMPV6: "ICMPv6"}
FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
DIRECTIONS = {0: "in", 1: "broadcast", 2: "multicast", 3: "other-host", 4: "out"}
"""The cooked header's packet type: to this host, broadcast, multicast, to another host, sent."""

_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}


class PcapError(ValueError):
    """Not a capture this reader understands (pcapng, another link type, a torn file)."""


@dataclass(frozen=True)
class Frame:
    """One captured frame, its link header taken off."""

    time: float
    wire_len: int  # the frame's length on the wire (the capture may hold less of it)
    ethertype: int
    direction: str  # see DIRECTIONS
    ifindex: int | None  # LINUX_SLL2 names the interface; LINUX_SLL does not
    data: bytes  # the network-layer bytes captured


@dataclass(frozen=True)
class Packet:
    """An IP packet with its transport ports (``None`` for ICMP and non-first fragments)."""

    frame: Frame
    proto: int
    src: str
    dst: str
    sport: int | None
    dport: int | None
    ip_len: int  # the IP packet's length, headers included
    payload_len: int  # transport payload bytes (TCP/UDP data)
    flags: int = 0  # TCP flags
    seq: int = 0  # TCP sequence number

    @property
    def name(self) -> str:
        return PROTOCOLS.get(self.proto, f"IP proto {self.proto}")

    def describe(self) -> str:
        src = self.src if self.sport is None else f"{self.src}:{self.sport}"
        dst = self.dst if self.dport is None else f"{self.dst}:{self.dport}"
        where = f"if {self.frame.ifindex}, " if self.frame.ifindex is not None else ""
        extra = f" [{tcp_flags(self.flags)}]" if self.proto == TCP else _icmp(self)
        what = f"{self.name} {src} > {dst}{extra}"
        return f"{what} ({where}{self.frame.direction}, {self.ip_len} bytes){_dns(self)}"


def tcp_flags(flags: int) -> str:
    return "".join(c for bit, c in ((SYN, "S"), (ACK, "."), (FIN, "F"), (RST, "R")) if flags & bit)


def read(path: Path) -> tuple[int, list[Frame]]:
    """The capture's link type and its frames."""
    raw = path.read_bytes()
    if len(raw) < 24 or raw[:4] not in _MAGIC:
        raise PcapError(f"{path}: not a pcap file (pcapng? write it with tcpdump -w)")
    order, tick = _MAGIC[raw[:4]]
    linktype = struct.unpack_from(order + "I", raw, 20)[0] & 0x0FFFFFFF
    frames, offset = [], 24
    while offset + 16 <= len(raw):
        sec, frac, caplen, wire_len = struct.unpack_from(order + "IIII", raw, offset)
        offset += 16
        body = raw[offset : offset + caplen]
        offset += caplen
        if len(body) < caplen:
            raise PcapError(f"{path}: torn last packet (tcpdump not stopped cleanly?)")
        frames.append(_frame(linktype, sec + frac * tick, wire_len, body))
    return linktype, frames


def _frame(linktype: int, time: float, wire_len: int, body: bytes) -> Frame:
    if linktype == LINKTYPE_LINUX_SLL2:  # protocol, reserved, ifindex, hatype, pkttype, ...
        ethertype, _, ifindex, _, pkttype = struct.unpack_from(">HHIHB", body)
        return Frame(time, wire_len, ethertype, _direction(pkttype), ifindex, body[20:])
    if linktype == LINKTYPE_LINUX_SLL:  # pkttype, hatype, addr len, addr[8], protocol
        pkttype = struct.unpack_from(">H", body)[0]
        ethertype = struct.unpack_from(">H", body, 14)[0]
        return Frame(time, wire_len, ethertype, _direction(pkttype), None, body[16:])
    if linktype == LINKTYPE_ETHERNET:  # a capture on one interface (-i veth…)
        ethertype = struct.unpack_from(">H", body, 12)[0]
        return Frame(time, wire_len, ethertype, "?", None, body[14:])
    raise PcapError(f"link type {linktype} (capture with -i any or on one Ethernet interface)")


def _direction(pkttype: int) -> str:
    return DIRECTIONS.get(pkttype, f"type {pkttype}")


def packet(frame: Frame) -> Packet | None:
    """The IP packet in ``frame``, or None for ARP and other non-IP frames."""
    data = frame.data
    if frame.ethertype == ETH_IPV4 and len(data) >= 20:
        ihl = (data[0] & 0x0F) * 4
        total, frag = struct.unpack_from(">H2xH", data, 2)
        proto = data[9]
        src, dst = str(ipaddress.IPv4Address(data[12:16])), str(ipaddress.IPv4Address(data[16:20]))
        # A segmentation-offload super-packet longer than 64 KiB carries 0 here.
        ip_len = total or frame.wire_len - (len(frame.data) - len(data))
        first_fragment = frag & 0x1FFF == 0
        return _transport(frame, proto, src, dst, data[ihl:], ip_len, ip_len - ihl, first_fragment)
    if frame.ethertype == ETH_IPV6 and len(data) >= 40:
        payload_len, proto = struct.unpack_from(">HB", data, 4)
        src, dst = str(ipaddress.IPv6Address(data[8:24])), str(ipaddress.IPv6Address(data[24:40]))
        return _transport(frame, proto, src, dst, data[40:], 40 + payload_len, payload_len, True)
    return None


def _transport(
    frame: Frame,
    proto: int,
    src: str,
    dst: str,
    seg: bytes,
    ip_len: int,
    seg_len: int,
    first_fragment: bool,
) -> Packet:
    if first_fragment and proto == TCP and len(seg) >= 20:
        sport, dport, seq = struct.unpack_from(">HHI", seg)
        header = (seg[12] >> 4) * 4
        return Packet(frame, proto, src, dst, sport, dport, ip_len, seg_len - header, seg[13], seq)
    if first_fragment and proto == UDP and len(seg) >= 8:
        sport, dport = struct.unpack_from(">HH", seg)
        return Packet(frame, proto, src, dst, sport, dport, ip_len, seg_len - 8)
    return Packet(frame, proto, src, dst, None, None, ip_len, 0)


def _icmp(p: Packet) -> str:
    """`` port unreachable`` and the like for ICMP, else ''."""
    if p.proto != ICMP:
        return ""
    ihl = (p.frame.data[0] & 0x0F) * 4
    kind = p.frame.data[ihl : ihl + 2]
    if len(kind) < 2:
        return ""
    names = {(0, 0): "echo reply", (8, 0): "echo request", (11, 0): "time exceeded"}
    names |= {
        (3, code): f"{what} unreachable"
        for code, what in enumerate(("net", "host", "proto", "port"))
    }
    return f" {names.get((kind[0], kind[1]), f'type {kind[0]} code {kind[1]}')}"


def _dns(p: Packet) -> str:
    """`` query NAME`` for a DNS query (what a stray lookup asked for), else ''."""
    if p.proto != UDP or 53 not in (p.sport, p.dport):
        return ""
    ihl = (p.frame.data[0] & 0x0F) * 4 if p.frame.ethertype == ETH_IPV4 else 40
    msg, labels, i = p.frame.data[ihl + 8 :], [], 12
    while 12 <= i < len(msg) and msg[i] and msg[i] < 64:
        labels.append(msg[i + 1 : i + 1 + msg[i]].decode("ascii", "replace"))
        i += 1 + msg[i]
    return f" query {'.'.join(labels)!r}" if labels else ""


def arp_addresses(frame: Frame) -> tuple[str, str] | None:
    """An IPv4-over-Ethernet ARP frame's sender and target protocol addresses."""
    data = frame.data
    if frame.ethertype != ETH_ARP or len(data) < 28 or data[2:4] != b"\x08\x00":
        return None
    return str(ipaddress.IPv4Address(data[14:18])), str(ipaddress.IPv4Address(data[24:28]))


_EPHEMERAL = re.compile(r":(?:3[2-9]\d{3}|[4-6]\d{4})\b")
"""A port in Linux's ephemeral range (32768-60999), masked where lines are counted."""


@dataclass
class Connection:
    """A TCP connection from the client to the server's port, from its first SYN."""

    client_port: int
    isn: int
    packets: int = 0
    to_server: int = 0  # IP bytes
    to_client: int = 0
    data_to_server: int = 0  # TCP payload bytes
    data_to_client: int = 0


@dataclass
class Traffic:
    """A capture sorted into the client's connections to the server's port and everything else."""

    client: str
    server: str
    port: int
    connections: list[Connection] = field(default_factory=list)
    frames: int = 0
    arp: int = 0  # ARP between the client's and the server's addresses: the kernel's, expected
    foreign: list[str] = field(default_factory=list)
    """Every frame that is not part of a connection the client opened to ``server:port``."""

    @property
    def packets(self) -> int:
        return sum(c.packets for c in self.connections)

    def totals(self) -> dict[str, int]:
        return {
            "frames": self.frames,
            "packets": self.packets,
            "connections": len(self.connections),
            "ip_bytes_to_server": sum(c.to_server for c in self.connections),
            "ip_bytes_to_client": sum(c.to_client for c in self.connections),
            "data_bytes_to_server": sum(c.data_to_server for c in self.connections),
            "data_bytes_to_client": sum(c.data_to_client for c in self.connections),
            "arp_frames": self.arp,
            "foreign_frames": len(self.foreign),
        }

    def foreign_summary(self, limit: int = 40) -> str:
        """The foreign frames, one line per distinct description, with their counts."""
        counts = Counter(_EPHEMERAL.sub(":*", line) for line in self.foreign)
        lines = [f"{n:5d} x {what}" for what, n in counts.most_common(limit)]
        more = len(counts) - limit
        return "\n".join(lines + ([f"... and {more} more kinds"] if more > 0 else []))


def client_traffic(frames: list[Frame], client: str, server: str, port: int) -> Traffic:
    """Sort ``frames`` into connections that ``client`` opened to ``server:port`` (each one's first
    packet a SYN from the client; the server answers, it never opens) and the foreign rest: UDP
    (a DNS query), ICMP, TCP to or from any other address or port, a connection first seen in the
    middle, a SYN from the server, IPv6, ARP that names a third address, any other frame."""
    traffic = Traffic(client, server, port, frames=len(frames))
    live: dict[int, Connection] = {}  # by client port
    for frame in frames:
        p = packet(frame)
        if p is None:
            arp = arp_addresses(frame)
            if arp is not None and set(arp) <= {client, server}:
                traffic.arp += 1
            elif arp is not None:
                traffic.foreign.append(
                    f"ARP {arp[0]} asks/tells about {arp[1]} ({frame.direction})"
                )
            else:
                traffic.foreign.append(f"EtherType {frame.ethertype:#06x} ({frame.direction})")
            continue
        to_server = (p.src, p.dst, p.dport) == (client, server, port)
        to_client = (p.src, p.dst, p.sport) == (server, client, port)
        if p.proto != TCP or not (to_server or to_client):
            traffic.foreign.append(p.describe())
            continue
        client_port = p.sport if to_server else p.dport
        assert client_port is not None
        opening = to_server and p.flags & (SYN | ACK) == SYN
        conn = live.get(client_port)
        if opening and (conn is None or conn.isn != p.seq):  # a new connection, not a resent SYN
            conn = live[client_port] = Connection(client_port, p.seq)
            traffic.connections.append(conn)
        if conn is None:
            traffic.foreign.append(f"{p.describe()}: no SYN from the client opened it")
            continue
        if to_client and p.flags & (SYN | ACK) == SYN:
            traffic.foreign.append(f"{p.describe()}: the server sent a SYN")
            continue
        conn.packets += 1
        if to_server:
            conn.to_server += p.ip_len
            conn.data_to_server += p.payload_len
        else:
            conn.to_client += p.ip_len
            conn.data_to_client += p.payload_len
    return traffic
