<#
.SYNOPSIS
Install vidtray for this Windows user from this checkout, put it in the Start menu, and start the tray.

.DESCRIPTION
Makes a venv at %LOCALAPPDATA%\vidtray\venv with a Python 3.11+ (the py launcher first), installs vidtray
with the generation stack into it, adds its Scripts folder to your PATH, adds a Start menu shortcut, asks
whether to start the tray at every login (`vidtray autostart enable` registers the windowless
vidtray-tray.exe under HKCU\Software\Microsoft\Windows\CurrentVersion\Run), and starts the tray.
No administrator rights, nothing outside your user profile. Run it again to update; it reuses the venv.

.PARAMETER Torch
auto (default): the CUDA 12.8 build from https://download.pytorch.org/whl/cu128 when nvidia-smi sees an
NVIDIA GPU, else the CPU build. cuda: that CUDA build. cpu: the CPU build from
https://download.pytorch.org/whl/cpu. none: no torch/diffusers (nothing can be generated). Or a package
index URL, e.g. https://download.pytorch.org/whl/cu126 for an older driver.

.PARAMETER Autostart
Start the tray at every login without asking.

.PARAMETER NoAutostart
Do not start the tray at login (turns an existing entry off). Neither switch: asks (default yes), or yes
when there is no console to ask on.

.PARAMETER NoStart
Do not start the tray now.

.PARAMETER Source
What to install instead of this checkout: a vidtray wheel or source folder.

.EXAMPLE
powershell -ExecutionPolicy Bypass -File installer\install.ps1
.EXAMPLE
powershell -ExecutionPolicy Bypass -File installer\install.ps1 -Torch cpu -NoAutostart -NoStart
#>
[CmdletBinding()]
param(
    [string]$Torch = "auto",
    [switch]$Autostart,
    [switch]$NoAutostart,
    [switch]$NoStart,
    [string]$Source = ""
)
$ErrorActionPreference = "Stop"
$CudaIndex = "https://download.pytorch.org/whl/cu128"
$CpuIndex = "https://download.pytorch.org/whl/cpu"

function Say([string]$Text) { Write-Host "vidtray install: $Text" }
function Die([string]$Text) { Write-Host "vidtray install: error: $Text" -ForegroundColor Red; exit 1 }
# Runs a probe; True when it exits 0. Its stderr is dropped with the error preference relaxed: Windows
# PowerShell 5.1 turns a native program's redirected stderr into a terminating error under "Stop".
function Test-Command([string]$Exe, [string[]]$Arguments) {
    $saved = $ErrorActionPreference
    $ErrorActionPreference = "Continue"
    try { & $Exe @Arguments 2>$null | Out-Null; return ($LASTEXITCODE -eq 0) }
    finally { $ErrorActionPreference = $saved }
}

if ($Autostart -and $NoAutostart) { Die "-Autostart and -NoAutostart contradict each other" }
if ($Torch -notmatch '^(auto|cuda|cpu|none|https?://.+|file:.+)$') {
    Die "-Torch takes auto, cuda, cpu, none or an index URL, not '$Torch'"
}

$checkout = Split-Path -Parent $PSScriptRoot
if (-not $Source) {
    $pyproject = Join-Path $checkout "pyproject.toml"
    if (-not ((Test-Path $pyproject) -and (Select-String -Path $pyproject -Pattern '^name = "vidtray"' -Quiet))) {
        Die "run this script from a clone of the vidtray repository, or pass -Source with a vidtray wheel or folder"
    }
    $Source = $checkout
} elseif (Test-Path $Source) {
    $Source = (Resolve-Path $Source).Path
} else {
    Die "${Source}: no such wheel or folder (vidtray is not on PyPI: install from a clone or a wheel)"
}

# -- a Python 3.11+, preferring one with Tk (the prompt popup); the py launcher first, since python.exe
# on PATH may be the Microsoft Store stub.
$python = $null
$withoutTk = $null
foreach ($candidate in @(@("py", "-3.13"), @("py", "-3.12"), @("py", "-3.11"), @("py", "-3"), @("python"))) {
    $exe = $candidate[0]
    $rest = @($candidate | Select-Object -Skip 1)
    if (-not (Get-Command $exe -ErrorAction SilentlyContinue)) { continue }
    if (-not (Test-Command $exe ($rest + @("-c", "import sys; sys.exit(sys.version_info < (3, 11))")))) { continue }
    if (Test-Command $exe ($rest + @("-c", "import tkinter"))) { $python = $candidate; break }
    if (-not $withoutTk) { $withoutTk = $candidate }
}
if (-not $python) {
    if (-not $withoutTk) { Die "vidtray needs Python 3.11 or newer: https://www.python.org/downloads/windows/" }
    $python = $withoutTk
    Say "NOTE: this Python has no Tk, so the prompt popup will not open (reinstall Python with 'tcl/tk and IDLE')"
}
$pyExe = $python[0]
$pyArgs = @($python | Select-Object -Skip 1)
$pyPath = (& $pyExe @pyArgs -c "import sys; print(sys.executable)")
Say "Python: $pyPath"

# -- torch: which build
$nvidia = [bool](Get-Command nvidia-smi -ErrorAction SilentlyContinue) -and (Test-Command "nvidia-smi" @("-L"))
$torchIndex = ""
switch -Regex ($Torch) {
    '^auto$' { if ($nvidia) { $torchIndex = $CudaIndex; $why = "nvidia-smi found an NVIDIA GPU" } else { $torchIndex = $CpuIndex; $why = "no NVIDIA GPU found" } }
    '^cuda$' { $torchIndex = $CudaIndex; $why = "-Torch cuda" }
    '^cpu$' { $torchIndex = $CpuIndex; $why = "-Torch cpu" }
    '^none$' { $torchIndex = "" }
    default { $torchIndex = $Torch; $why = "-Torch" }
}
if ($Torch -eq "none") {
    Say "torch: none (-Torch none): vidtray can watch, list and clean, but not generate"
} elseif ($torchIndex -eq $CudaIndex) {
    Say "torch: the CUDA 12.8 build ($why): about 3 GB to download, a venv of about 6 GB"
} elseif ($torchIndex -eq $CpuIndex) {
    Say "torch: the CPU build ($why): about 250 MB to download, a venv of about 1.5 GB; generating on a CPU is slow"
} else {
    Say "torch: from $torchIndex"
}

# -- the venv
$home_ = Join-Path $env:LOCALAPPDATA "vidtray"
$venv = Join-Path $home_ "venv"
$venvPython = Join-Path $venv "Scripts\python.exe"
Say "installing into $venv"
New-Item -ItemType Directory -Force -Path $home_ | Out-Null
& $pyExe @pyArgs -m venv $venv
if ($LASTEXITCODE -ne 0) { Die "could not make the venv $venv" }
& $venvPython -m pip install --quiet --upgrade pip
if ($LASTEXITCODE -ne 0) { Say "could not upgrade pip; going on with the venv's own" }

$spec = $Source
if ($Torch -ne "none") {
    # A torch of another build (an earlier -Torch cpu, now cuda) goes first: pip would keep it. The build
    # is the version's local label: 2.5.1+cpu from .../whl/cpu, 2.5.1+cu128 from .../whl/cu128.
    $have = ""
    if (Test-Command $venvPython @("-c", "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is None)")) {
        $have = (& $venvPython -c "import importlib.metadata as m; print(m.version('torch'))")
    }
    if ($have) {
        $haveLabel = if ($have -match '\+(.+)$') { $Matches[1] } else { "" }
        $wantLabel = ($torchIndex.TrimEnd('/') -split '/')[-1]
        if ($haveLabel -ne $wantLabel) {
            Say "replacing torch $have (another build)"
            & $venvPython -m pip uninstall --quiet -y torch
        }
    }
    & $venvPython -m pip install --quiet --index-url $torchIndex torch
    if ($LASTEXITCODE -ne 0) { Die "could not install torch from $torchIndex" }
    $spec = "$Source[gen]"
}
Say "installing $spec"
& $venvPython -m pip install --quiet $spec
if ($LASTEXITCODE -ne 0) { Die "pip could not install $spec" }

$binDir = Join-Path $venv "Scripts"
$vidtray = Join-Path $binDir "vidtray.exe"
$trayExe = Join-Path $binDir "vidtray-tray.exe"
if (-not (Test-Path $vidtray)) { Die "installed, but $vidtray is missing" }
Say ("installed: " + (& $vidtray --version))

# vidtray on the user's PATH (new terminals).
$userPath = [Environment]::GetEnvironmentVariable("Path", "User")
if (-not ($userPath -split ";" | Where-Object { $_ -eq $binDir })) {
    $parts = @($userPath -split ";" | Where-Object { $_ }) + $binDir
    [Environment]::SetEnvironmentVariable("Path", ($parts -join ";"), "User")
    Say "added $binDir to your PATH (open a new terminal to use it)"
}

# A Start menu shortcut to the windowless tray, with vidtray's icon.
$icon = (& $venvPython -c "from vidtray.icons import icon_path; print(icon_path('idle', 'ico'))")
$programs = [Environment]::GetFolderPath("Programs")
$shell = New-Object -ComObject WScript.Shell
$link = $shell.CreateShortcut((Join-Path $programs "vidtray.lnk"))
$link.TargetPath = $trayExe
$link.WorkingDirectory = $env:USERPROFILE
$link.IconLocation = $icon
$link.Description = "Generate videos with local AI models from the tray"
$link.Save()
Say "Start menu: vidtray"

# Start on login: asked when there is someone to ask.
if ($Autostart) {
    $enable = $true
} elseif ($NoAutostart) {
    $enable = $false
} elseif ([Environment]::UserInteractive -and -not [Console]::IsInputRedirected) {
    $answer = Read-Host "Start vidtray at every login? [Y/n]"
    $enable = -not ($answer -match '^[Nn]')
} else {
    $enable = $true
    Say "start on login: on (the default; no console to ask on; -NoAutostart leaves it off)"
}
if ($enable) {
    # Registers the absolute path of vidtray-tray.exe (a windowless gui-script) in HKCU\...\Run.
    & $vidtray autostart enable
    if ($LASTEXITCODE -ne 0) { Die "vidtray autostart enable failed" }
} else {
    & $vidtray autostart disable
}

if (-not $NoStart) {
    $proc = Start-Process -FilePath $trayExe -WorkingDirectory $env:USERPROFILE -PassThru
    Start-Sleep -Seconds 2
    if ($proc.HasExited) {
        Say "the tray did not stay up. If vidtray was already running, quit it from its menu and start vidtray"
        Say "from the Start menu; otherwise see: vidtray doctor"
    } else {
        Say "tray started (pid $($proc.Id)): left click opens the prompt popup, right click the menu"
    }
}
Say "done. Check the setup with: vidtray doctor"
