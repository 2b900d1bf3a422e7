<?php
// The worker of "Playing with Gearman" (2009), plus functions for the other flows.
//
//   php worker.php [STEP_SECONDS [RECORD_FILE]]
//
//   reverse      : sendStatus(i, 10) ten times, STEP seconds apart, returns strrev(workload)
//                  (the blog's $job->status(); ext 2.x calls it sendStatus)
//   reverse_data : sendData("chunkI:<char>") for the first 3 characters, returns strrev(workload)
//   warn         : sendWarning("careful: <workload>"), sendData("d1"), returns "warned"
//   throw        : sendException("boom: <workload>") and ends the job with GEARMAN_WORK_EXCEPTION
//   fail         : ends the job with GEARMAN_WORK_FAIL
//
// With RECORD_FILE, each job appends one line "PID START END FUNCTION WORKLOAD"
// (microtime floats) once it is done, so tests can prove which process ran a job, and when.
require __DIR__ . '/common.php';
$step = isset($argv[1]) ? (float)$argv[1] : 0.05;
$record = isset($argv[2]) ? $argv[2] : '';

function record($record, $fn, $start, $workload) {
    if ($record === '') return;
    $line = sprintf("%d %.6f %.6f %s %s\n", getmypid(), $start, microtime(true), $fn, $workload);
    file_put_contents($record, $line, FILE_APPEND | LOCK_EX);
}

$worker = new_worker();
$worker->addFunction("reverse", function ($job) use ($step, $record) {
    $t0 = microtime(true);
    for ($i = 1; $i <= 10; $i++) {
        $job->sendStatus($i, 10);
        usleep((int)($step * 1e6));
    }
    record($record, "reverse", $t0, $job->workload());
    return strrev($job->workload());
});
$worker->addFunction("reverse_data", function ($job) use ($step, $record) {
    $t0 = microtime(true);
    $w = $job->workload();
    for ($i = 0; $i < min(3, strlen($w)); $i++) {
        $job->sendData("chunk" . $i . ":" . $w[$i]);
        usleep((int)($step * 1e6));
    }
    record($record, "reverse_data", $t0, $w);
    return strrev($w);
});
$worker->addFunction("warn", function ($job) use ($record) {
    $t0 = microtime(true);
    $job->sendWarning("careful: " . $job->workload());
    $job->sendData("d1");
    record($record, "warn", $t0, $job->workload());
    return "warned";
});
$worker->addFunction("throw", function ($job) use ($record) {
    $t0 = microtime(true);
    $job->sendException("boom: " . $job->workload());
    record($record, "throw", $t0, $job->workload());
    $job->setReturn(GEARMAN_WORK_EXCEPTION);
    return "";
});
$worker->addFunction("fail", function ($job) use ($record) {
    $t0 = microtime(true);
    record($record, "fail", $t0, $job->workload());
    $job->setReturn(GEARMAN_WORK_FAIL);
    return "";
});
// A job ended with WORK_FAIL/WORK_EXCEPTION is not a reason to stop serving.
while (true) {
    $ok = @$worker->work();
    $rc = $worker->returnCode();
    if (getenv('INTEROP_DEBUG')) fwrite(STDERR, "work() -> " . json_encode($ok) . " rc=$rc\n");
    if (!$ok && !in_array($rc, array(GEARMAN_WORK_FAIL, GEARMAN_WORK_EXCEPTION), true)) break;
}
