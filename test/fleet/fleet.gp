# fleet.png from the data files TestScaleUp and TestRenewalWave write:
#   gnuplot -e "dir='bin/fleet'; n=500; qps=500; out='bin/fleet.png'" test/fleet/fleet.gp
# Left: nodes with kubelet.conf (and certagent's serving certificate) over
# time, certagent against the kubelet's own bootstrap, with the
# controller-manager's default and a raised client rate limit. Right: the
# first renewals of certificates issued together, per 10 s.
if (!exists("dir")) dir = "bin/fleet"
if (!exists("out")) out = "bin/fleet.png"
if (!exists("n")) n = 0
if (!exists("qps")) qps = 500
have(f) = int(system("test -s '".dir."/".f."' && echo 1 || echo 0"))

set terminal pngcairo size 1400,560 font "DejaVu Sans,11"
set output out
set termoption noenhanced
set multiplot layout 1,2 title sprintf("certagent fleet: %d nodes on one control plane (2-core machine)", n)

set title "Scale-up: nodes done over time"
set xlabel "seconds after the fleet's processes started"
set ylabel "nodes"
set key bottom right
set grid
set yrange [0:*]
# Only the series whose data exist (make test's short run has no waves).
add(cmd, f, style, title) = have(f) ? cmd.(strlen(cmd) > 0 ? ", " : "").sprintf("'%s/%s' %s title \"%s\"", dir, f, style, title) : cmd
p = ""
p = add(p, "scaleup-default-certagent.dat", "using 1:2 with steps lw 2 lc rgb '#1f77b4'", "certagent kubelet.conf, default limit (QPS 20)")
p = add(p, "scaleup-default-serving.dat", "using 1:2 with steps lw 2 dt 2 lc rgb '#1f77b4'", "certagent serving certificate, default limit")
p = add(p, "scaleup-default-kubelet.dat", "using 1:2 with steps lw 2 lc rgb '#d62728'", "kubelet kubelet.conf, default limit")
p = add(p, "scaleup-raised-certagent.dat", "using 1:2 with steps lw 2 lc rgb '#2ca02c'", sprintf("certagent kubelet.conf, raised limit (QPS %d)", qps))
p = add(p, "scaleup-raised-serving.dat", "using 1:2 with steps lw 2 dt 2 lc rgb '#2ca02c'", "certagent serving certificate, raised limit")
p = add(p, "scaleup-raised-kubelet.dat", "using 1:2 with steps lw 2 lc rgb '#ff7f0e'", "kubelet kubelet.conf, raised limit")
if (strlen(p) > 0) { eval "plot ".p } else { unset border; unset tics; unset xlabel; unset ylabel; plot NaN notitle }

set title "Renewal wave: 10-minute certificates issued together (client + serving)"
set xlabel "seconds after the fleet's processes started"
set ylabel "first renewals per 10 s"
set key top left
set style fill solid 0.6 noborder
set boxwidth 9
p = ""
p = add(p, "wave-renewbefore.dat", "using ($1+5):2 with boxes lc rgb '#d62728'", "rotation.renewBefore: 7m")
p = add(p, "wave-default.dat", "using ($1+5):2 with boxes lc rgb '#1f77b4'", "default: a point in 70-90 % of the lifetime")
if (strlen(p) > 0) { eval "plot ".p } else { set title "Renewal wave: not run (FLEET_WAVE=1)"; unset border; unset tics; unset xlabel; unset ylabel; unset key; plot [0:1][0:1] NaN notitle }
unset multiplot
