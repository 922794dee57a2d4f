# bash completion for certagent
_certagent() {
	local cur prev cmd
	cur="${COMP_WORDS[COMP_CWORD]}"
	prev="${COMP_WORDS[COMP_CWORD-1]}"
	cmd="${COMP_WORDS[1]}"
	if [ "$COMP_CWORD" -eq 1 ]; then
		COMPREPLY=($(compgen -W "run status renew config wait version help" -- "$cur"))
		return
	fi
	case "$prev" in
		--config|--bootstrap-kubeconfig|--kubeconfig) COMPREPLY=($(compgen -f -- "$cur")); return ;;
		--cert-dir) COMPREPLY=($(compgen -d -- "$cur")); return ;;
		-o) COMPREPLY=($(compgen -W "text json" -- "$cur")); return ;;
		--log-format) COMPREPLY=($(compgen -W "console json" -- "$cur")); return ;;
		--log-level) COMPREPLY=($(compgen -W "debug info warn error" -- "$cur")); return ;;
		--serving) COMPREPLY=($(compgen -W "true false" -- "$cur")); return ;;
	esac
	local common="--config --node-name --bootstrap-kubeconfig --kubeconfig --cert-dir"
	case "$cmd" in
		run) COMPREPLY=($(compgen -W "$common --once --serving --timeout --log-format --log-level" -- "$cur")) ;;
		status) COMPREPLY=($(compgen -W "$common -o" -- "$cur")) ;;
		renew) COMPREPLY=($(compgen -W "$common --force --timeout --log-level" -- "$cur")) ;;
		wait) COMPREPLY=($(compgen -W "$common --serving --timeout" -- "$cur")) ;;
		config) COMPREPLY=($(compgen -W "$common --once --serving --timeout --log-format --log-level -o --check" -- "$cur")) ;;
	esac
}
complete -F _certagent certagent
