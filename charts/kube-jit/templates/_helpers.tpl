{{/* Names and labels shared by every template. */}}

{{- define "kube-jit.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's base name: also the leader-election Lease and the prefix of the
cluster-scoped RBAC. A release named like the chart is just "kube-jit".
*/}}
{{- define "kube-jit.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "kube-jit.serviceAccountName" -}}
{{- default (include "kube-jit.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{/*
Helm's labels. Never app.kubernetes.io/managed-by: kube-jit — that label marks
the objects of grants, which the operator deletes when their grant ends.
*/}}
{{- define "kube-jit.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "kube-jit.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: kube-jit
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "kube-jit.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kube-jit.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The operator's pods (not the uninstall hook's). */}}
{{- define "kube-jit.operatorSelectorLabels" -}}
{{ include "kube-jit.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "kube-jit.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
A file of crds/ (copied into files/ by `hack/helm.sh generate`) with this
release's labels, and helm.sh/resource-policy: keep when asked, added to the
metadata of every object; the rest is the file byte for byte.
*/}}
{{- define "kube-jit.generatedFile" -}}
{{- $root := index . 0 }}
{{- $keep := index . 2 }}
{{- $meta := printf "metadata:\n  labels:\n%s\n" (include "kube-jit.labels" $root | indent 4) }}
{{- if $keep }}
{{- $meta = printf "%s  annotations:\n    helm.sh/resource-policy: keep\n" $meta }}
{{- end }}
{{- regexReplaceAll "(?m)^metadata:\n" ($root.Files.Get (index . 1)) $meta }}
{{- end }}
