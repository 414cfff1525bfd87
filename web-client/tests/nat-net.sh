#!/bin/sh
# The network of nat.test.mjs, built from named network namespaces (root; iproute2, iptables):
#
#   PREFIX-home1 10.1.0.2 ── 10.1.0.1 PREFIX-r1 203.0.113.11 ─┐
#                                                              ├─ br0 203.0.113.1 PREFIX-pub (node, TURN)
#                                                              │  (default route: nowhere)
#   PREFIX-home2 10.2.0.2 ── 10.2.0.1 PREFIX-r2 203.0.113.12 ─┘
#
# Each router masquerades its LAN; nothing routes between the two LANs or from the public
# side into them, as on the internet. Namespaces made with `ip netns add` are new ones,
# whatever namespace this script runs in (it also works under `unshare -n`).
#
#   nat-net.sh up PREFIX                 build it (tears down a leftover of PREFIX first)
#   nat-net.sh rules PREFIX NAT BLOCK    NAT: cone | symmetric (both routers)
#                                        BLOCK: none | direct (UDP between the routers' WAN
#                                        addresses dropped) | udp2 (direct, and every UDP
#                                        packet through r2 dropped: home2 has TCP only)
#   nat-net.sh move PREFIX N HOST        home N gets the address 10.N.0.HOST instead of its own
#                                        (a laptop on a new address: its old flows break)
#   nat-net.sh down PREFIX               kill what still runs inside, delete the namespaces
set -eu

cmd=${1:-}
p=${2:-}
case "$p" in
  '' | *[!a-z0-9]*) echo "usage: $0 up|rules|move|down PREFIX [ARGS] (PREFIX: a-z0-9)" >&2; exit 2 ;;
esac
pub=$p-pub
nsx() { ns=$1; shift; ip netns exec "$ns" "$@"; }

down() {
  for ns in "$p-home1" "$p-home2" "$p-r1" "$p-r2" "$pub"; do
    [ -e "/run/netns/$ns" ] || [ -e "/var/run/netns/$ns" ] || continue
    # Whatever still runs in there (a browser, the node) was started for this network.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
}

up() {
  down
  for ns in "$pub" "$p-r1" "$p-r2" "$p-home1" "$p-home2"; do
    ip netns add "$ns"
    # IPv4 only: no IPv6 link-local addresses turning up after DAD, a "network change" to
    # Chromium in the middle of a test.
    nsx "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip -n "$ns" link set lo up
  done
  ip -n "$pub" link add br0 type bridge
  ip -n "$pub" addr add 203.0.113.1/24 dev br0
  ip -n "$pub" link set br0 up
  # The rest of the internet: a default route to a gateway nobody answers for (a permanent
  # neighbour entry, so no ARP fails), where packets vanish. As out there, a packet to a
  # private address (a host candidate) is lost, not refused: with no route at all a TURN
  # server gets ENETUNREACH and may drop the whole allocation.
  ip -n "$pub" neigh add 203.0.113.254 lladdr 02:00:00:00:00:fe dev br0 nud permanent
  ip -n "$pub" route add default via 203.0.113.254
  for i in 1 2; do
    r=$p-r$i
    home=$p-home$i
    ip -n "$pub" link add "r$i" type veth peer name wan netns "$r"
    ip -n "$pub" link set "r$i" master br0 up
    ip -n "$r" addr add "203.0.113.1$i/24" dev wan
    ip -n "$r" link set wan up
    ip -n "$r" route add default via 203.0.113.1
    ip -n "$r" link add lan type veth peer name eth0 netns "$home"
    ip -n "$r" addr add "10.$i.0.1/24" dev lan
    ip -n "$r" link set lan up
    ip -n "$home" addr add "10.$i.0.2/24" dev eth0
    ip -n "$home" link set eth0 up
    ip -n "$home" route add default via "10.$i.0.1"
    nsx "$r" sysctl -qw net.ipv4.ip_forward=1
  done
}

rules() {
  nat=$1
  block=$2
  case "$nat" in
    cone) masq='-j MASQUERADE' ;;
    symmetric) masq='-j MASQUERADE --random-fully' ;;
    *) echo "NAT must be cone or symmetric" >&2; exit 2 ;;
  esac
  case "$block" in
    none | direct | udp2) ;;
    *) echo "BLOCK must be none, direct or udp2" >&2; exit 2 ;;
  esac
  for i in 1 2; do
    other=203.0.113.1$((3 - i))
    # One iptables-restore per router: the old rules give way to the new ones at once, so no
    # connection opened meanwhile goes out un-NATed (and stays so in conntrack).
    {
      echo '*nat'
      echo ':PREROUTING ACCEPT [0:0]'
      echo ':INPUT ACCEPT [0:0]'
      echo ':OUTPUT ACCEPT [0:0]'
      echo ':POSTROUTING ACCEPT [0:0]'
      echo "-A POSTROUTING -s 10.$i.0.0/24 -o wan $masq"
      echo 'COMMIT'
      echo '*filter'
      echo ':INPUT ACCEPT [0:0]'
      echo ':FORWARD ACCEPT [0:0]'
      echo ':OUTPUT ACCEPT [0:0]'
      # Unsolicited UDP from outside is dropped silently, as home routers do. Dropped before
      # its conntrack entry is confirmed, it cannot take the tuple the LAN's next packet to
      # that sender needs: the mapping stays port-preserving, so hole punching works.
      echo '-A INPUT -i wan -p udp -m conntrack --ctstate NEW,INVALID -j DROP'
      if [ "$block" != none ]; then
        echo "-A FORWARD -p udp -d $other -j DROP"
        echo "-A FORWARD -p udp -s $other -j DROP"
      fi
      if [ "$block" = udp2 ] && [ "$i" = 2 ]; then echo '-A FORWARD -p udp -j DROP'; fi
      echo 'COMMIT'
    } | nsx "$p-r$i" iptables-restore -w
  done
}

move() {
  home=$p-home$1
  ip -n "$home" addr flush dev eth0
  ip -n "$home" addr add "10.$1.0.$2/24" dev eth0
  ip -n "$home" route replace default via "10.$1.0.1"
}

case "$cmd" in
  up) up ;;
  move) move "${3:?N}" "${4:?HOST}" ;;
  down) down ;;
  rules) rules "${3:?NAT}" "${4:?BLOCK}" ;;
  *) echo "usage: $0 up|rules|move|down PREFIX [ARGS]" >&2; exit 2 ;;
esac
