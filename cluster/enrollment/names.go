package enrollment

import (
	"net"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// Names is what a node's TPMEnrollment says the machine may serve as: the
// addresses and DNS names the operator's provisioning listed. A list the
// record leaves out constrains nothing; a list it has, even empty, is the
// whole of what is allowed.
type Names struct {
	// Addresses are the listed IPs in canonical form (net.IP.String; an
	// unparsable entry is kept as written and so matches nothing).
	Addresses       []string
	AddressesListed bool
	DNSNames        []string
	DNSNamesListed  bool
}

// Names returns the names node's TPMEnrollment lists, and whether the node
// has a record (one being deleted no longer counts). Records are named
// after their node, so it is a look-up by key.
func (s *Store) Names(node string) (Names, bool) {
	obj, ok, err := s.informer.GetIndexer().GetByKey(node)
	if err != nil || !ok {
		return Names{}, false
	}
	u, isU := obj.(*unstructured.Unstructured)
	if !isU || u.GetDeletionTimestamp() != nil {
		return Names{}, false
	}
	var n Names
	n.Addresses, n.AddressesListed = stringList(u, "addresses")
	for i, a := range n.Addresses {
		if ip := net.ParseIP(a); ip != nil {
			n.Addresses[i] = ip.String()
		}
	}
	n.DNSNames, n.DNSNamesListed = stringList(u, "dnsNames")
	return n, true
}

// stringList is spec.<field> as strings, and whether the record has it.
func stringList(u *unstructured.Unstructured, field string) ([]string, bool) {
	list, found, err := unstructured.NestedStringSlice(u.Object, "spec", field)
	if err != nil || !found {
		return nil, false
	}
	return list, true
}
