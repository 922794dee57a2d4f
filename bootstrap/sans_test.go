package bootstrap

import (
	"bufio"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
)

// TestPrimaryIPIsOnTheDefaultRoute: the serving certificate's IP is the
// address of the interface that carries the default route, as the kubelet
// picks it (k8s.io/apimachinery's ChooseHostInterface reads the same
// table); checked here against /proc/net/route read independently.
func TestPrimaryIPIsOnTheDefaultRoute(t *testing.T) {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		t.Fatalf("this test reads the kernel's routing table: %v", err)
	}
	defer f.Close()
	var iface string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 2 && fields[1] == "00000000" && fields[2] != "Destination" { // destination 0.0.0.0: the default route
			iface = fields[0]
			break
		}
	}
	ip := PrimaryIP()
	if iface == "" {
		if ip != nil && !ip.IsGlobalUnicast() {
			t.Fatalf("no default route, and PrimaryIP chose %s", ip)
		}
		t.Logf("no default route here; PrimaryIP = %v", ip)
		return
	}
	ifc, err := net.InterfaceByName(iface)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := ifc.Addrs()
	if err != nil {
		t.Fatal(err)
	}
	var onIface []string
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			onIface = append(onIface, n.IP.String())
		}
	}
	if ip == nil || !slices.Contains(onIface, ip.String()) {
		t.Fatalf("PrimaryIP = %v, want one of %s's addresses %v (the default route's interface)", ip, iface, onIface)
	}
	req := (&Bootstrapper{cfg: Config{NodeName: "n", PrimaryIP: PrimaryIP}}).ServingRequest()
	if len(req.IPAddresses) == 0 || !req.IPAddresses[0].Equal(ip) {
		t.Fatalf("the serving request's IPs %v do not start with the primary IP %s", req.IPAddresses, ip)
	}
	t.Logf("default route via %s; serving IP %s", iface, ip)
}
