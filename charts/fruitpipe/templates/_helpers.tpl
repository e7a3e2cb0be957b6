{{- define "fruitpipe.fullname" -}}
{{- printf "%s-fruitpipe" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fruitpipe.labels" -}}
app.kubernetes.io/name: fruitpipe
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "fruitpipe.selectorLabels" -}}
app.kubernetes.io/name: fruitpipe
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "fruitpipe.identifySelectorLabels" -}}
app.kubernetes.io/name: fruitpipe
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: identify
{{- end -}}

{{- define "fruitpipe.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "fruitpipe.operatorServiceAccount" -}}
{{- default (printf "%s-operator" (include "fruitpipe.fullname" .)) .Values.operator.serviceAccount.name -}}
{{- end -}}

{{- define "fruitpipe.runnerServiceAccount" -}}
{{- default (printf "%s-runner" (include "fruitpipe.fullname" .)) .Values.runner.serviceAccount.name -}}
{{- end -}}
