// SPDX-License-Identifier: (MIT OR Apache-2.0) AND GPL-2.0-only
//
// udptee's kernel fast path: a TC ingress program that copies each datagram sent to the listen
// address to the targets udptee serves from the kernel, with bpf_clone_redirect, rewriting the
// destination address and port (and the checksums) of each copy. See docs/architecture.md.
//
// For every UDP datagram to the listen address and port that it can handle, the program:
//   1. reads the published configuration (double-buffered, checked like a seqlock: a torn read is
//      never used, the datagram goes up unmarked instead and user space serves every target);
//   2. for each kernel target of the datagram's family, rewrites the header to that target, marks
//      the skb as a copy (the loop guard) and clones it into the ingress of the target's interface;
//   3. if user space still needs the original (a user-space target, a recorder or a tap), restores
//      the header and marks the original with the generation it was served under, so the workers
//      skip exactly the targets the kernel served; otherwise the original itself becomes the copy
//      for the last kernel target (or, when the copies go to another interface than the one it
//      arrived on, is dropped after its last clone: it has served every target).
// What it does not handle (fragments, IP options, IPv6 extension headers, GSO packets) goes up
// unchanged and unmarked, counted by reason: user space then serves every target, as without it.
//
// Every packet continues with TC_ACT_UNSPEC (TCX_NEXT): programs attached after this one still see
// it, and with several of them the packet goes on as if this one were not there.
//
// Compiled by build.rs with clang -target bpf; loaded by src/fastpath (aya).

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

// Kept in step with src/fastpath/maps.rs.
#define MAX_KTARGETS 8
#define MAX_SLOTS 64
#define MARK_HANDLED 0x7ee10000u // | generation & 0xffff: the original, served under that generation
#define MARK_COPY 0x7ee20000u    // a copy this program made: never copied again
#define MARK_MASK 0xffff0000u

enum reason {
	R_HANDLED = 0,    // datagrams the program served (copied to every kernel target)
	R_CONSUMED = 1,   // of those, the original became the last copy (user space never saw it)
	R_FRAGMENT = 2,   // first fragments of a datagram to the listen port
	R_IP_OPTIONS = 3, // IPv4 with options
	R_IPV6_EXT = 4,   // IPv6 with extension headers before UDP
	R_GSO = 5,        // GSO/GRO-merged packets (several datagrams in one skb)
	R_NOT_UDP = 6,    // other protocols to a specific listen address
	R_BUSY = 7,       // the configuration changed under the read: served by user space
	R_SHORT = 8,      // headers not readable
	R_RESTORE = 9,    // the original could not be restored after copying: dropped, counted
	R_MALFORMED = 10, // lengths that do not add up: left to the stack, which drops it
	R_CONSUMED_BYTES = 11, // payload bytes of the R_CONSUMED datagrams
	R_COUNT = 12,
};

struct ktarget {
	__u32 home;    // the interface holding the address; 0 for a loopback address
	__u32 addr[4]; // network order; IPv4 in addr[0]
	__u16 port;    // network order
	__u8 family;   // 4 or 6
	__u8 slot;     // this target's row in tstats (stable per name)
};

struct config {
	__u32 gen; // the generation this slot holds; 0: nothing published
	__u32 v4_addr; // network order; 0: any
	__u32 v6_addr[4]; // all zero: any
	__u16 port;       // network order
	__u8 v4;          // listen for IPv4
	__u8 v6;          // listen for IPv6
	__u8 pass_v4;     // user space needs the original IPv4 datagram
	__u8 pass_v6;
	__u8 n;           // targets in use
	__u8 pad;
	__u32 lo;         // lo's ifindex
	struct ktarget t[MAX_KTARGETS];
};

struct tstat {
	__u64 copies;  // clones the kernel took (and the original, as the last copy)
	__u64 backlog; // clones refused: the receive backlog was full
	__u64 error;   // clones refused for another reason
	__u64 bytes;   // payload bytes of the copies
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct config);
} cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} cur SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_SLOTS);
	__type(key, __u32);
	__type(value, struct tstat);
} tstats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, R_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");



#define IP_OFF ETH_HLEN
#define IP4_CSUM_OFF (IP_OFF + 10)
#define IP4_DST_OFF (IP_OFF + 16)
#define UDP4_OFF (IP_OFF + 20)
#define IP6_DST_OFF (IP_OFF + 24)
#define UDP6_OFF (IP_OFF + 40)
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

static __always_inline void count_n(__u32 reason, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &reason);
	if (v)
		*v += n;
}

static __always_inline void count(__u32 reason)
{
	count_n(reason, 1);
}

static __always_inline int same6(const __u32 *a, const __u32 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
}

// Rewrites the destination from (*addr, *port) to (to, to_port), keeping the checksums right
// whatever the skb's checksum state (the helpers handle CHECKSUM_PARTIAL and _COMPLETE).
static __always_inline int rewrite4(struct __sk_buff *skb, __u32 *addr, __u16 *port, __u32 to,
				    __u16 to_port)
{
	if (*addr != to) {
		if (bpf_l4_csum_replace(skb, UDP4_OFF + 6, *addr, to,
					BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0 | 4) ||
		    bpf_l3_csum_replace(skb, IP4_CSUM_OFF, *addr, to, 4) ||
		    bpf_skb_store_bytes(skb, IP4_DST_OFF, &to, 4, 0))
			return -1;
		*addr = to;
	}
	if (*port != to_port) {
		if (bpf_l4_csum_replace(skb, UDP4_OFF + 6, *port, to_port, BPF_F_MARK_MANGLED_0 | 2) ||
		    bpf_skb_store_bytes(skb, UDP4_OFF + 2, &to_port, 2, 0))
			return -1;
		*port = to_port;
	}
	return 0;
}

static __always_inline int rewrite6(struct __sk_buff *skb, __u32 *addr, __u16 *port,
				    const __u32 *to, __u16 to_port)
{
	if (!same6(addr, to)) {
		__u32 from[4] = {addr[0], addr[1], addr[2], addr[3]};
		__u32 next[4] = {to[0], to[1], to[2], to[3]};
		__s64 diff = bpf_csum_diff(from, sizeof(from), next, sizeof(next), 0);
		if (diff < 0 || bpf_l4_csum_replace(skb, UDP6_OFF + 6, 0, diff, BPF_F_PSEUDO_HDR) ||
		    bpf_skb_store_bytes(skb, IP6_DST_OFF, next, sizeof(next), 0))
			return -1;
		addr[0] = to[0];
		addr[1] = to[1];
		addr[2] = to[2];
		addr[3] = to[3];
	}
	if (*port != to_port) {
		if (bpf_l4_csum_replace(skb, UDP6_OFF + 6, *port, to_port, 2) ||
		    bpf_skb_store_bytes(skb, UDP6_OFF + 2, &to_port, 2, 0))
			return -1;
		*port = to_port;
	}
	return 0;
}

static __always_inline void tcount(__u32 slot, long ret, __u32 payload)
{
	struct tstat *s = bpf_map_lookup_elem(&tstats, &slot);
	if (!s)
		return;
	if (ret == 0) {
		s->copies += 1;
		s->bytes += payload;
	}
	else if (ret > 0)
		s->backlog += 1; // NET_RX_DROP from netif_rx: the backlog queue is full
	else
		s->error += 1;
}

// What the per-target callback needs, and what it leaves: too big for the stack, so it lives in a
// per-CPU scratch slot (a TC program runs to its end on one CPU; the clones it makes are processed
// later, from the backlog, never inside it).
struct copy_ctx {
	struct config local;
	__u32 addr[4]; // the header's destination now
	__u16 port;
	__u8 mac[ETH_ALEN]; // the original's Ethernet destination
	__u32 ifindex;
	__u32 payload;
	int v6;
	int fam;
	int pass;
	int last;
	int last_round;
	int mac_zero;
	int action; // -2: go on; else the program's verdict
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct copy_ctx);
} scratch SEC(".maps");

// The callback's argument, on the stack (bpf_loop takes a stack pointer).
struct loop_arg {
	struct __sk_buff *skb;
	struct copy_ctx *x;
};

static long copy_one(__u64 index, void *data)
{
	struct loop_arg *arg = data;
	struct copy_ctx *x = arg->x;
	__u32 round = index / MAX_KTARGETS;
	__u32 i = index % MAX_KTARGETS;
	if (i >= x->local.n || i >= MAX_KTARGETS)
		return 0;
	struct ktarget *t = &x->local.t[i];
	if (t->family != x->fam || (t->home == x->ifindex) != round)
		return 0;
	struct __sk_buff *skb = arg->skb;
	__u32 to_if = round ? x->ifindex : x->local.lo;
	int err = x->v6 ? rewrite6(skb, x->addr, &x->port, t->addr, t->port)
			: rewrite4(skb, &x->addr[0], &x->port, t->addr[0], t->port);
	int want_zero = to_if != x->ifindex;
	if (!err && want_zero != x->mac_zero) {
		__u8 zero[ETH_ALEN] = {};
		err = bpf_skb_store_bytes(skb, 0, want_zero ? zero : x->mac, ETH_ALEN, 0);
		if (!err)
			x->mac_zero = want_zero;
	}
	if (err) {
		tcount(t->slot, -1, 0);
		return 0;
	}
	skb->mark = MARK_COPY;
	int final = !x->pass && (int)i == x->last && (int)round == x->last_round;
	if (final && to_if == x->ifindex) {
		// The original is the last copy: the stack delivers it to this target, with the route
		// it already has.
		tcount(t->slot, 0, x->payload);
		count(R_HANDLED);
		count(R_CONSUMED);
		count_n(R_CONSUMED_BYTES, x->payload);
		x->action = TC_ACT_UNSPEC;
		return 1;
	}
	long ret = bpf_clone_redirect(skb, to_if, BPF_F_INGRESS);
	tcount(t->slot, ret, x->payload);
	if (final) {
		// The last copy went to another interface: the original has served every target.
		count(R_HANDLED);
		count(R_CONSUMED);
		count_n(R_CONSUMED_BYTES, x->payload);
		x->action = TC_ACT_SHOT;
		return 1;
	}
	return 0;
}

SEC("classifier")
int udptee_fastpath(struct __sk_buff *skb)
{
	__u32 zero = 0;
	if ((skb->mark & MARK_MASK) == MARK_COPY || (skb->mark & MARK_MASK) == MARK_HANDLED)
		return TC_ACT_UNSPEC; // the loop guard: one of our copies, or handled by another udptee

	__u32 *curp = bpf_map_lookup_elem(&cur, &zero);
	if (!curp)
		return TC_ACT_UNSPEC;
	__u32 gen = *(volatile __u32 *)curp;
	if (gen == 0)
		return TC_ACT_UNSPEC;
	__u32 which = gen & 1;
	struct config *c = bpf_map_lookup_elem(&cfg, &which);
	if (!c)
		return TC_ACT_UNSPEC;

	int v6;
	if (skb->protocol == bpf_htons(ETH_P_IP) && c->v4)
		v6 = 0;
	else if (skb->protocol == bpf_htons(ETH_P_IPV6) && c->v6)
		v6 = 1;
	else
		return TC_ACT_UNSPEC;

	// The IP header first (a packet of another protocol may be shorter than a UDP header would
	// need), then, once it is UDP to us, the UDP header.
	__u32 need = v6 ? UDP6_OFF : UDP4_OFF;
	if (skb->len < need)
		return TC_ACT_UNSPEC;
	need += sizeof(struct udphdr);
	if (skb->len < need)
		need = skb->len;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	if (data + need > end) {
		if (bpf_skb_pull_data(skb, need)) {
			count(R_SHORT);
			return TC_ACT_UNSPEC;
		}
		data = (void *)(long)skb->data;
		end = (void *)(long)skb->data_end;
	}
	if (data + (v6 ? UDP6_OFF : UDP4_OFF) > end) {
		count(R_SHORT);
		return TC_ACT_UNSPEC;
	}

	__u32 addr[4] = {0, 0, 0, 0};
	__u16 port;
	int bad_len = 0;
	if (!v6) {
		struct iphdr *ip = data + IP_OFF;
		if (c->v4_addr && ip->daddr != c->v4_addr)
			return TC_ACT_UNSPEC;
		if (ip->protocol != IPPROTO_UDP) {
			if (c->v4_addr)
				count(R_NOT_UDP);
			return TC_ACT_UNSPEC;
		}
		__u16 frag = bpf_ntohs(ip->frag_off);
		if (frag & IP_OFFSET)
			return TC_ACT_UNSPEC; // a later fragment: no port to tell whose
		struct udphdr *udp = (void *)ip + ip->ihl * 4;
		if ((void *)(udp + 1) > end)
			return TC_ACT_UNSPEC;
		if (udp->dest != c->port)
			return TC_ACT_UNSPEC;
		if (frag & IP_MF) {
			count(R_FRAGMENT);
			return TC_ACT_UNSPEC;
		}
		if (ip->ihl != 5) {
			count(R_IP_OPTIONS);
			return TC_ACT_UNSPEC;
		}
		__u32 tot = bpf_ntohs(ip->tot_len), ulen = bpf_ntohs(udp->len);
		bad_len = tot < 28 || IP_OFF + tot > skb->len || ulen < sizeof(struct udphdr) ||
			  ulen > tot - 20;
		addr[0] = ip->daddr;
		port = udp->dest;
	} else {
		struct ipv6hdr *ip6 = data + IP_OFF;
		__u32 *daddr = (__u32 *)&ip6->daddr;
		if ((c->v6_addr[0] | c->v6_addr[1] | c->v6_addr[2] | c->v6_addr[3]) &&
		    !same6(daddr, c->v6_addr))
			return TC_ACT_UNSPEC;
		if (ip6->nexthdr != IPPROTO_UDP) {
			switch (ip6->nexthdr) {
			case IPPROTO_HOPOPTS:
			case IPPROTO_ROUTING:
			case IPPROTO_DSTOPTS:
				// Not multicast (MLD and the like carry hop-by-hop options too).
				if (ip6->daddr.in6_u.u6_addr8[0] != 0xff)
					count(R_IPV6_EXT);
				break;
			case IPPROTO_FRAGMENT: {
				// Counted once per datagram: at its first fragment, when it is UDP to our port.
				struct {
					__u8 nexthdr;
					__u8 reserved;
					__be16 frag_off;
					__be32 id;
					__be16 sport;
					__be16 dport;
				} f;
				if (!bpf_skb_load_bytes(skb, UDP6_OFF, &f, sizeof(f)) &&
				    f.nexthdr == IPPROTO_UDP && (bpf_ntohs(f.frag_off) >> 3) == 0 &&
				    f.dport == c->port)
					count(R_FRAGMENT);
				break;
			}
			default:
				if (c->v6_addr[0] | c->v6_addr[1] | c->v6_addr[2] | c->v6_addr[3])
					count(R_NOT_UDP);
			}
			return TC_ACT_UNSPEC;
		}
		struct udphdr *udp = (void *)(ip6 + 1);
		if ((void *)(udp + 1) > end)
			return TC_ACT_UNSPEC; // a truncated UDP header: the stack drops it
		if (udp->dest != c->port)
			return TC_ACT_UNSPEC;
		__u32 plen = bpf_ntohs(ip6->payload_len), ulen = bpf_ntohs(udp->len);
		// (A jumbogram's zero lengths count too: rare, and served by user space.)
		bad_len = UDP6_OFF + plen > skb->len || ulen < sizeof(struct udphdr) || ulen > plen;
		addr[0] = daddr[0];
		addr[1] = daddr[1];
		addr[2] = daddr[2];
		addr[3] = daddr[3];
		port = udp->dest;
	}
	if (skb->gso_segs > 1 || skb->gso_size) {
		count(R_GSO); // the UDP layer splits it; user space serves each part
		return TC_ACT_UNSPEC;
	}
	// The stack drops a datagram whose lengths do not add up, before any socket sees it: so must
	// we, rather than copy it and count copies nobody gets. It goes up for the stack to drop.
	if (bad_len) {
		count(R_MALFORMED);
		return TC_ACT_UNSPEC;
	}

	// Copy the configuration, then check that it did not change while we read it: the writer only
	// rewrites a slot after publishing the other, so an unchanged `cur` means an intact copy.
	struct copy_ctx *xp = bpf_map_lookup_elem(&scratch, &zero);
	if (!xp)
		return TC_ACT_UNSPEC;
	struct copy_ctx *x = xp;
	__builtin_memcpy(&x->local, c, sizeof(x->local));
	barrier();
	if (x->local.gen != gen || *(volatile __u32 *)curp != gen) {
		count(R_BUSY);
		return TC_ACT_UNSPEC;
	}

	struct loop_arg arg = {.skb = skb, .x = x};
	x->v6 = v6;
	x->fam = v6 ? 6 : 4;
	x->payload = skb->len - (v6 ? UDP6_OFF : UDP4_OFF) - sizeof(struct udphdr);
	x->pass = v6 ? x->local.pass_v6 : x->local.pass_v4;
	x->ifindex = skb->ifindex;
	x->addr[0] = addr[0];
	x->addr[1] = addr[1];
	x->addr[2] = addr[2];
	x->addr[3] = addr[3];
	x->port = port;
	x->action = -2;
	x->mac_zero = 0;
	// Where each copy goes: a target whose address is on the interface the datagram arrived on
	// gets it there (the same route the original would take); every other one through lo's
	// ingress, where a local address is delivered whatever the source (with lo's settings, see
	// src/fastpath/sysctl.rs). Copies into lo go first (round 0), so the original's Ethernet
	// header changes at most twice, and the last copy can be the original itself when it stays.
	x->last = -1;
	x->last_round = -1;
	for (int i = 0; i < MAX_KTARGETS; i++) {
		if (i >= x->local.n)
			break;
		if (x->local.t[i].family != x->fam)
			continue;
		int round = x->local.t[i].home == x->ifindex;
		if (round >= x->last_round) {
			x->last_round = round;
			x->last = i;
		}
	}
	if (x->last < 0)
		return TC_ACT_UNSPEC; // no kernel target for this family: nothing to copy, nothing to mark
	// A copy redirected into another interface's ingress (lo, from a veth or NIC) is classified
	// again by its Ethernet destination: it must carry lo's address (all zeros) or the IP layer
	// drops it as PACKET_OTHERHOST. The original's is kept to put back.
	if (bpf_skb_load_bytes(skb, 0, x->mac, ETH_ALEN)) {
		count(R_SHORT);
		return TC_ACT_UNSPEC;
	}
	// One callback per (round, target), verified once (bpf_loop, 5.17+) rather than unrolled.
	bpf_loop(2 * MAX_KTARGETS, copy_one, &arg, 0);
	if (x->action != -2)
		return x->action;

	__u32 *orig = addr;
	__u16 orig_port = port;
	// User space needs the original: restore it and say which generation served it.
	int err = v6 ? rewrite6(skb, x->addr, &x->port, orig, orig_port)
		     : rewrite4(skb, &x->addr[0], &x->port, orig[0], orig_port);
	if (!err && x->mac_zero)
		err = bpf_skb_store_bytes(skb, 0, x->mac, ETH_ALEN, 0);
	if (err) {
		// Cannot happen with a writable skb; a datagram we cannot restore must not reach anyone
		// under the wrong address, so it is dropped, and counted.
		count(R_RESTORE);
		return TC_ACT_SHOT;
	}
	skb->mark = MARK_HANDLED | (gen & 0xffff);
	count(R_HANDLED);
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "GPL";
