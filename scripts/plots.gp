# gnuplot script of scripts/plots.sh (run that, not this): reads
# datadir/{ratios,sweep}.dat and datadir/vars.gp, writes outdir/*.png.

load datadir.'/vars.gp'

# ------------------------------------------------ latency_vs_remotes.png
if (nsweep > 0) {
	set terminal pngcairo noenhanced size 960,640 font 'DejaVu Sans,11'
	set output outdir.'/latency_vs_remotes.png'
	set datafile missing '?'
	set title sprintf("One-page munmap latency against active remote CPU threads\n(bench-shootdown sweep: every remote also loads the page; %s CPUs; median of %d run%s)", nproc, sweepruns, sweepruns == 1 ? '' : 's')
	set xlabel 'active remote threads'
	set ylabel 'munmap latency (µs, log scale)'
	set logscale x 2
	set logscale y 10
	set xtics (1, 2, 4, 8, 16, 32)
	set format y '%g'
	set xrange [0.85:maxremotes * 1.18]
	set grid xtics ytics lc rgb '#dddddd'
	set key inside top left vertical opaque box lc rgb '#bbbbbb' samplen 3 spacing 1.2
	sweep = datadir.'/sweep.dat'
	plot sweep using 1:($2/1000) with linespoints lw 2 pt 7 ps 1.2 lc rgb '#d62728' title 'ours: signals (default)', \
	     sweep using 1:($3/1000) with linespoints lw 2 pt 5 ps 1.2 lc rgb '#9467bd' title 'ours: RCU strict (munmap waits for a grace period)', \
	     sweep using 1:($4/1000) with linespoints lw 2 pt 9 ps 1.5 lc rgb '#2ca02c' title 'ours: RCU deferred (frames freed by call_rcu)', \
	     sweep using 1:($5/1000) with linespoints lw 2 dt 2 pt 13 ps 1.5 lc rgb '#1f77b4' title 'kernel munmap'
	unset output
	reset
} else {
	print 'plots: no sweep_modes in the JSON (no bench-shootdown, or --no-sweep): latency_vs_remotes.png not written'
}

# ------------------------------------------------------------ ratios.png
# ratios.dat columns: 1 label, 2 y, 3 ratio, 4 target (0: none),
# 5 status (0 meets the target, 1 misses it, 2 no target)
set terminal pngcairo noenhanced size 1100,(160 + 34 * nrows) font 'DejaVu Sans,11'
set output outdir.'/ratios.png'
set title sprintf("Ratios: our time / the peer's for the same work (lower is better)\nmedian over the runs given (%s)", runs)
set logscale x 10
set xrange [xmin:xmax]
set format x '%g'
set yrange [-0.7:nrows - 0.3]
set ytics scale 0
set grid xtics lc rgb '#dddddd'
set xlabel 'ours / peer (log scale)'
set key outside bottom center horizontal
set style fill solid 0.75 noborder
set lmargin 48
set arrow 1 from 1, graph 0 to 1, graph 1 nohead dt 2 lc rgb '#555555'
r = datadir.'/ratios.dat'
h = 0.32
plot r using (sqrt(xmin*$3)):2:(xmin):3:($2-h):($2+h):ytic(1) with boxxyerror lc rgb '#ffffff' notitle, \
     r using (sqrt(xmin*$3)):($5 == 0 ? $2 : 1/0):(xmin):3:($2-h):($2+h) with boxxyerror lc rgb '#2ca02c' title 'meets its target', \
     r using (sqrt(xmin*$3)):($5 == 1 ? $2 : 1/0):(xmin):3:($2-h):($2+h) with boxxyerror lc rgb '#d62728' title 'misses its target', \
     r using (sqrt(xmin*$3)):($5 == 2 ? $2 : 1/0):(xmin):3:($2-h):($2+h) with boxxyerror lc rgb '#7f7f7f' title 'no target', \
     r using 4:($5 == 2 ? 1/0 : $2-0.45):(0):(0.9) with vectors nohead lw 3 lc rgb '#000000' title 'target', \
     NaN with lines dt 2 lc rgb '#555555' title 'parity (1)', \
     r using ($4 > $3 && $4 < 4 * $3 ? $4 : $3):2:(sprintf(' %.3g', $3)) with labels left offset 0.4, 0 notitle
unset output
