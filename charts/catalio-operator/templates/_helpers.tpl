{{- define "catalio-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "catalio-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "catalio-operator.labels" -}}
{{ include "catalio-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "catalio-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "catalio-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "catalio-operator.tokenUrl" -}}
{{- if .Values.tokenUrl -}}
{{- .Values.tokenUrl -}}
{{- else -}}
{{- printf "http://%s.%s.svc:%d/oauth/token" (include "catalio-operator.fullname" .) .Release.Namespace (int .Values.service.port) -}}
{{- end -}}
{{- end -}}

{{- define "catalio-operator.signingKeySecret" -}}
{{- printf "%s-signing-keys" (include "catalio-operator.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "catalio-operator.leaderLease" -}}
{{- printf "%s-leader" (include "catalio-operator.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* What the operator does in every namespace it watches. */}}
{{- define "catalio-operator.watchRules" -}}
- apiGroups: [catalio.ai]
  resources: [apicredentials]
  verbs: [get, list, watch]
- apiGroups: [catalio.ai]
  resources: [apicredentials/status]
  verbs: [patch]
# Owner references with blockOwnerDeletion on the Secrets it creates.
- apiGroups: [catalio.ai]
  resources: [apicredentials/finalizers]
  verbs: [update]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
# The JSON:API's data: read through watches, written by POST, PATCH and
# DELETE (which archives, so no delete verb).
- apiGroups: [catalio.ai]
  resources: [requirements, personas, usecases, testcases, testresults, components, processes, policies, capabilities, teams]
  verbs: [get, list, watch, create, patch]
{{- end -}}
