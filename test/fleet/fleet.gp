# fleet.png from the data files TestScaleUp and TestRenewalWave write:
#   gnuplot -e "dir='bin/fleet'; n=500; qps=500; out='bin/fleet.png'" test/fleet/fleet.gp
# Left: nodes with kubelet.conf (and certagent's serving certificate) over
# time, certagent (and certagent with the serving certificate off) against
# the kubelet's own bootstrap, with the controller-manager's default and a
# raised client rate limit. Right: the
# first renewals of certificates issued together, per 10 s.
if (!exists("dir")) dir = "bin/fleet"
if (!exists("out")) out = "bin/fleet.png"
if (!exists("n")) n = 0
if (!exists("qps")) qps = 500
have(f) = int(system("test -s '".dir."/".f."' && echo 1 || echo 0"))

set terminal pngcairo size 1600,680 font "DejaVu Sans,11"
set output out
set termoption noenhanced
set multiplot layout 1,2 title sprintf("certagent fleet: %d nodes on one control plane (2-core machine)", n)

set title "Scale-up: nodes done over time (controller-manager --kube-api-qps 20, its default, or raised)"
set xlabel "seconds after the fleet's processes started"
set ylabel "nodes"
set key below horizontal maxcols 2 reverse Left width -2 spacing 1.1
set grid
set xrange [0:*]
set yrange [0:*]
# Only the series whose data exist (make test's short run has no waves).
add(cmd, f, style, title) = have(f) ? cmd.(strlen(cmd) > 0 ? ", " : "").sprintf("'%s/%s' %s title \"%s\"", dir, f, style, title) : cmd
p = ""
p = add(p, "scaleup-default-certagent.dat", "using 1:2 with steps lw 2 lc rgb '#1f77b4'", "certagent: kubelet.conf, QPS 20")
p = add(p, "scaleup-default-serving.dat", "using 1:2 with steps lw 2 dt 2 lc rgb '#1f77b4'", "certagent: serving certificate, QPS 20")
p = add(p, "scaleup-default-certagent-client.dat", "using 1:2 with steps lw 1.5 dt 3 lc rgb '#1f77b4'", "certagent client only: kubelet.conf, QPS 20")
p = add(p, "scaleup-default-kubelet.dat", "using 1:2 with steps lw 2 lc rgb '#d62728'", "kubelet: kubelet.conf, QPS 20")
p = add(p, "scaleup-raised-certagent.dat", "using 1:2 with steps lw 2 lc rgb '#2ca02c'", sprintf("certagent: kubelet.conf, QPS %d", qps))
p = add(p, "scaleup-raised-serving.dat", "using 1:2 with steps lw 2 dt 2 lc rgb '#2ca02c'", sprintf("certagent: serving certificate, QPS %d", qps))
p = add(p, "scaleup-raised-certagent-client.dat", "using 1:2 with steps lw 1.5 dt 3 lc rgb '#2ca02c'", sprintf("certagent client only: kubelet.conf, QPS %d", qps))
p = add(p, "scaleup-raised-kubelet.dat", "using 1:2 with steps lw 2 lc rgb '#ff7f0e'", sprintf("kubelet: kubelet.conf, QPS %d", qps))
if (strlen(p) > 0) { eval "plot ".p } else { set multiplot next }

set title "Renewal wave: 10-minute certificates issued together (client + serving)"
set xlabel "seconds after the fleet's processes started"
set ylabel "first renewals per 10 s"
set key below
set style fill solid 0.6 noborder
set boxwidth 9
p = ""
p = add(p, "wave-renewbefore.dat", "using ($1+5):2 with boxes lc rgb '#d62728'", "rotation.renewBefore: 7m")
p = add(p, "wave-default.dat", "using ($1+5):2 with boxes lc rgb '#1f77b4'", "default: a point in 70-90 % of the lifetime")
if (strlen(p) > 0) { eval "plot ".p } else { set title "Renewal wave: not run (FLEET_WAVE=1)"; unset border; unset tics; unset xlabel; unset ylabel; unset key; plot [0:1][0:1] NaN notitle }
unset multiplot
