// Peer benchmark for the official Go SDK (github.com/s2-streamstore/s2-sdk-go), run by
// bench/run_peers.sh.
//
//	s2-peer-bench-go --workload producer|session|append|read_session|read_unary \
//	                 --record-size N --records N --basin B --stream S
//
// read_session / read_unary (issue 15) read N records from seq_num 0 of a stream that holds
// them (bench/run_peers.sh prepares it, or it is the null sink's gen-SIZE-N): one
// ReadSession with Count N, every record taken; or unary Reads of 1000-record pages.
//
// Endpoints and token come from S2_ACCOUNT_ENDPOINT / S2_BASIN_ENDPOINT / S2_ACCESS_TOKEN
// (s2.NewFromEnvironment). Prints one JSON line; cpu_user_s / cpu_sys_s / peak_rss_mb are
// null here and filled in by the runner, which measures the whole child process.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/s2-streamstore/s2-sdk-go/s2"
)

const sdkVersion = "0.20.0"
const oneMiB = 1024 * 1024

func die(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "go peer: "+format+"\n", a...)
	os.Exit(1)
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

func percentile(sorted []float64, p float64) any {
	if len(sorted) == 0 {
		return nil
	}
	idx := int(math.Ceil(p*float64(len(sorted)))) - 1
	if idx < 0 {
		idx = 0
	}
	return math.Round(sorted[idx]*1000) / 1000
}

// Field order matches the other peers' JSON lines.
type result struct {
	SDK          string  `json:"sdk"`
	Version      string  `json:"version"`
	Workload     string  `json:"workload"`
	RecordSize   int     `json:"record_size"`
	Records      int     `json:"records"`
	BatchRecords any     `json:"batch_records"`
	Seconds      float64 `json:"seconds"`
	RecordsPerS  float64 `json:"records_per_s"`
	MiBPerS      float64 `json:"mib_per_s"`
	AckP50Ms     any     `json:"ack_p50_ms"`
	AckP99Ms     any     `json:"ack_p99_ms"`
	CPUWindowS   float64 `json:"cpu_window_s"`
	CPUUserS     any     `json:"cpu_user_s"`
	CPUSysS      any     `json:"cpu_sys_s"`
	PeakRSSMB    any     `json:"peak_rss_mb"`
}

type pending[T any] struct {
	t0  time.Time
	fut T
}

func main() {
	workload := flag.String("workload", "producer", "producer|session|append|read_session|read_unary")
	recordSize := flag.Int("record-size", 1024, "record body bytes")
	records := flag.Int("records", 10000, "records to append")
	basinName := flag.String("basin", "", "basin")
	streamName := flag.String("stream", "", "stream")
	flag.Parse()
	if *basinName == "" || *streamName == "" {
		die("--basin and --stream are required")
	}
	if os.Getenv("S2_ACCESS_TOKEN") == "" {
		os.Setenv("S2_ACCESS_TOKEN", "ignored")
	}
	ctx := context.Background()
	client := s2.NewFromEnvironment(nil)
	stream := client.Basin(*basinName).Stream(s2.StreamName(*streamName))

	body := make([]byte, *recordSize)
	for i := range body {
		body[i] = 'x'
	}
	n := *records
	lat := make([]float64, 0, n)
	var batchRecords any

	cpu0 := cpuSeconds()
	start := time.Now()
	switch *workload {
	case "producer":
		session, err := stream.AppendSession(ctx, &s2.AppendSessionOptions{MaxInflightBytes: 5 * oneMiB})
		if err != nil {
			die("append session: %v", err)
		}
		// ChannelBuffer (batches queued between the Batcher and the session, outside the
		// session's inflight-bytes limit) stays at the SDK default (100) unless
		// GO_BATCHER_CHANNEL_BUFFER is set.
		chanBuf, _ := strconv.Atoi(os.Getenv("GO_BATCHER_CHANNEL_BUFFER"))
		batcher := s2.NewBatcher(ctx, &s2.BatchingOptions{
			Linger: 5 * time.Millisecond, MaxRecords: 1000, MaxMeteredBytes: oneMiB,
			ChannelBuffer: chanBuf,
		})
		producer := s2.NewProducer(ctx, batcher, session)
		// Tickets resolve in order; one consumer goroutine stamps each ack as it resolves.
		ch := make(chan pending[*s2.RecordSubmitFuture], 65536)
		done := make(chan []float64)
		go func() {
			l := make([]float64, 0, n)
			var next uint64
			first := true
			for p := range ch {
				ticket, err := p.fut.Wait(ctx)
				if err != nil {
					die("record enqueue: %v", err)
				}
				ack, err := ticket.Ack(ctx)
				if err != nil {
					die("record ack: %v", err)
				}
				l = append(l, float64(time.Since(p.t0).Microseconds())/1e3)
				if !first && ack.SeqNum() != next {
					die("seq_num %d != expected %d", ack.SeqNum(), next)
				}
				first, next = false, ack.SeqNum()+1
			}
			done <- l
		}()
		for i := 0; i < n; i++ {
			t0 := time.Now()
			fut, err := producer.Submit(s2.AppendRecord{Body: body})
			if err != nil {
				die("submit: %v", err)
			}
			ch <- pending[*s2.RecordSubmitFuture]{t0, fut}
		}
		close(ch)
		if err := producer.Close(); err != nil {
			die("producer close: %v", err)
		}
		lat = <-done
		if err := session.Close(); err != nil {
			die("session close: %v", err)
		}
	case "session":
		br := 1000
		if m := oneMiB / (*recordSize + 8); m < br {
			br = m
		}
		if br < 1 {
			br = 1
		}
		batchRecords = br
		session, err := stream.AppendSession(ctx, &s2.AppendSessionOptions{MaxInflightBytes: 5 * oneMiB})
		if err != nil {
			die("append session: %v", err)
		}
		ch := make(chan pending[*s2.BatchSubmitTicket], 65536)
		done := make(chan []float64)
		go func() {
			l := []float64{}
			for p := range ch {
				if _, err := p.fut.Ack(ctx); err != nil {
					die("batch ack: %v", err)
				}
				l = append(l, float64(time.Since(p.t0).Microseconds())/1e3)
			}
			done <- l
		}()
		for left := n; left > 0; {
			k := br
			if left < k {
				k = left
			}
			recs := make([]s2.AppendRecord, k)
			for i := range recs {
				recs[i] = s2.AppendRecord{Body: body}
			}
			t0 := time.Now()
			fut, err := session.Submit(&s2.AppendInput{Records: recs})
			if err != nil {
				die("session submit: %v", err)
			}
			// Submit returns at once; waiting for the enqueue before the next submit keeps
			// batches in order and gives the session's inflight-bytes backpressure to this loop.
			ticket, err := fut.Wait(ctx)
			if err != nil {
				die("batch enqueue: %v", err)
			}
			ch <- pending[*s2.BatchSubmitTicket]{t0, ticket}
			left -= k
		}
		close(ch)
		lat = <-done
		if err := session.Close(); err != nil {
			die("session close: %v", err)
		}
	case "append":
		batchRecords = 1
		for i := 0; i < n; i++ {
			t0 := time.Now()
			if _, err := stream.Append(ctx, &s2.AppendInput{Records: []s2.AppendRecord{{Body: body}}}); err != nil {
				die("append: %v", err)
			}
			lat = append(lat, float64(time.Since(t0).Microseconds())/1e3)
		}
	case "read_session":
		zero, count := uint64(0), uint64(n)
		session, err := stream.ReadSession(ctx, &s2.ReadOptions{SeqNum: &zero, Count: &count})
		if err != nil {
			die("read_session: %v", err)
		}
		got := uint64(0)
		for got < count && session.Next() {
			r := session.Record()
			if r.SeqNum != got {
				die("seq_num %d != expected %d", r.SeqNum, got)
			}
			if len(r.Body) != *recordSize {
				die("body of %d bytes", len(r.Body))
			}
			got++
		}
		if err := session.Err(); err != nil {
			die("read: %v", err)
		}
		session.Close()
		if got != count {
			die("read %d records, expected %d", got, count)
		}
	case "read_unary":
		batchRecords = int(math.Max(1, math.Min(1000, float64(oneMiB/(*recordSize+8)))))
		got := uint64(0)
		for got < uint64(n) {
			from, want := got, uint64(math.Min(1000, float64(uint64(n)-got)))
			t0 := time.Now()
			batch, err := stream.Read(ctx, &s2.ReadOptions{SeqNum: &from, Count: &want})
			if err != nil {
				die("read: %v", err)
			}
			lat = append(lat, float64(time.Since(t0).Microseconds())/1e3)
			if len(batch.Records) == 0 {
				die("empty page at %d", got)
			}
			for _, r := range batch.Records {
				if r.SeqNum != got {
					die("seq_num %d != expected %d", r.SeqNum, got)
				}
				got++
			}
		}
	default:
		die("unknown workload %s", *workload)
	}
	seconds := time.Since(start).Seconds()
	cpuWindow := cpuSeconds() - cpu0

	tail, err := stream.CheckTail(ctx)
	if err != nil {
		die("check_tail: %v", err)
	}
	reading := strings.HasPrefix(*workload, "read_")
	if (reading && tail.Tail.SeqNum < uint64(n)) || (!reading && tail.Tail.SeqNum != uint64(n)) {
		die("tail is %d after %d records: records did not land", tail.Tail.SeqNum, n)
	}
	sort.Float64s(lat)
	out := result{
		SDK: "go", Version: sdkVersion, Workload: *workload,
		RecordSize: *recordSize, Records: n, BatchRecords: batchRecords,
		Seconds:     math.Round(seconds*1e4) / 1e4,
		RecordsPerS: math.Round(float64(n)/seconds*10) / 10,
		MiBPerS:     math.Round(float64(n**recordSize)/seconds/oneMiB*1000) / 1000,
		AckP50Ms:    percentile(lat, 0.50), AckP99Ms: percentile(lat, 0.99),
		CPUWindowS: math.Round(cpuWindow*100) / 100,
	}
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
}
